"""Your own feature code, one module per model (see the README: "Your own feature code").

A model spec names a factory here with `pipeline: user_models.<module>:<function>`. This folder
sits beside the package under include/, so it is importable wherever the package is: the local
virtualenv (editable install), `airflow standalone`, Celery workers and the compose image.
"""
