"""`alpr view`: a live, annotated picture of the edge pipeline in the browser.

The view is an extra, non-interfering listener: it subscribes to the frames PUB like any other reader
(frames are shed, never waited for) and binds a SUB on `endpoints.monitor`, where detect, track and the
OCR coordinator publish best-effort copies of what they send downstream. It never sits on a reliable
socket, so it cannot slow the pipeline or take messages from it.

- `draw`: the annotation as a pure function over numpy arrays.
- `state`: what is known per camera (frames, detections, tracks, reads, rates) and what to draw when.
- `recorder`: `--save-video`, the annotated stream into an mp4.
- `server`: the ZeroMQ loops, the renderer and the HTTP page (Litestar under uvicorn).
- `cli`: `alpr view`.
"""
