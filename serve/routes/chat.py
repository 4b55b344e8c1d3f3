from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["chat"])
CHAT_PAGE = Path(__file__).resolve().parents[1] / "static" / "chat.html"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def chat_page() -> HTMLResponse:
    """The chat widget: plain HTML and JavaScript, no build step."""
    return HTMLResponse(CHAT_PAGE.read_text(encoding="utf-8"))
