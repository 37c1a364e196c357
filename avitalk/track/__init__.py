"""Talking-face video -> FLAME coefficients: a face tracker (MediaPipe's networks under ai-edge-litert) and a fit of
the head model in use to its landmarks. ``avitalk data track`` runs it over a folder of videos."""
