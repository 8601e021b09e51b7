import os
from html import escape

from django.http import HttpResponse


def home(request):
    release = escape(os.environ.get('HANGAR_RELEASE', 'unknown release'))
    instance = escape(os.environ.get('HANGAR_INSTANCE', 'an unknown instance'))
    return HttpResponse(
        '<!doctype html><title>Hello from Hangar</title>'
        f'<h1>Hello from Hangar!</h1><p>Release {release}, served by {instance}.</p>'
    )
