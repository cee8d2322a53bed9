"""Server-rendered pages: sign-in, recordings list and page, live calls, account, admin.

Forms post with the session's CSRF token; every page works without JavaScript, and
``static/app.js`` adds in-place search with history, local times, the waveform and the
live table.

One module per group of pages, each with its router, included by
:func:`callrec.web.app.create_app` in this order: :mod:`~callrec.web.pages.signin`,
:mod:`~callrec.web.pages.recordings`, :mod:`~callrec.web.pages.account`,
:mod:`~callrec.web.pages.admin`. :mod:`~callrec.web.pages.render` and
:mod:`~callrec.web.pages.inputs` hold what they share.
"""
