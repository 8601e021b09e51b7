"""WSGI entry point. With no Procfile, Hangar runs `gunicorn hello.wsgi --bind 0.0.0.0:$PORT`."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'hello.settings')

application = get_wsgi_application()
