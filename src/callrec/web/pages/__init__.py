"""Server-rendered pages (moving to one module per group of pages)."""

from callrec.web.pages.recordings import error_page, render, router

__all__ = ["error_page", "render", "router"]
