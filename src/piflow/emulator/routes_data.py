"""(placeholder: routes are being written)"""

from fastapi import APIRouter

router = APIRouter()
admin_router = APIRouter()
