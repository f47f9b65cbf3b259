"""A local web page over one loaded checkpoint (`git-scratch explore MODEL`): drop an image or
a short video, read its captions, beams and answers, and see where each generated token looks,
per layer and head, rolled out, the sequence's attention mask, and parity with transformers.

    session.py   Explorer: the model, the uploads, the sequences; every API operation as a method
    server.py    the standard library's HTTP server over it, on 127.0.0.1 only; the static page
    static/      the page itself: plain HTML, CSS and JavaScript, no build step, works offline

docs/explore.md describes the JSON API.
"""

from .server import make_server, serve
from .session import ApiError, Explorer

__all__ = ["ApiError", "Explorer", "make_server", "serve"]
