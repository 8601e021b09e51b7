"""Settings of the hello example. Secrets and hosts come from the environment (`hangar config:set`)."""
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = os.environ.get('DJANGO_DEBUG', '').strip().lower() in ('1', 'true', 'yes', 'on')

SECRET_KEY = os.environ.get('SECRET_KEY') or os.environ.get('DJANGO_SECRET_KEY')
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured('Set the SECRET_KEY config var: hangar config:set SECRET_KEY=... -a APP')
    SECRET_KEY = 'insecure-development-key-only-used-when-DJANGO_DEBUG-is-on'

ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get('DJANGO_ALLOWED_HOSTS', '.localhost,localhost,127.0.0.1').split(',')
    if host.strip()
]

INSTALLED_APPS = []

MIDDLEWARE = [
    'django.middleware.security.SecurityMiddleware',
    'django.middleware.common.CommonMiddleware',
]

ROOT_URLCONF = 'hello.urls'
WSGI_APPLICATION = 'hello.wsgi.application'

# The page needs no database; apps that do read DATABASE_URL (see test/fixtures/django-app).
DATABASES = {}

USE_TZ = True
TIME_ZONE = 'UTC'
