"""MediaPipe's face mesh with refined lips, serving frames over a pipe. Run by the refined tracker's own Python (an
environment holding ``mediapipe==0.10.21``, made by ``avitalk data track --install-refined``), never imported by
avitalk: this file imports nothing of avitalk, and that environment has numpy < 2, protobuf < 5, jax and OpenCV,
which avitalk's does not.

Protocol (little-endian, on stdin / stdout; see :mod:`avitalk.track.refined`):

- on start, after MediaPipe loaded: the line ``READY <mediapipe version>``;
- request ``F`` + uint32 height + uint32 width + height * width * 3 bytes of RGB -> reply int32 faces seen + float32
  [478, 3] landmarks in image pixels (x right, y down, z the network's depth in the same scale; NaN without a face);
- ``R``: forget the tracked face (a new video); no reply;
- ``Q`` or end of input: quit.
"""

import struct
import sys

import numpy as np

N_POINTS = 478


def _read(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def main() -> None:
    import mediapipe as mp

    def mesh():
        return mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=2, refine_landmarks=True,
                                               min_detection_confidence=0.5, min_tracking_confidence=0.5)

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    fm = mesh()
    out.write(f"READY {mp.__version__}\n".encode())
    out.flush()
    try:
        while True:
            try:
                op = _read(inp, 1)
            except EOFError:
                break
            if op == b"Q":
                break
            if op == b"R":
                fm.close()
                fm = mesh()
                continue
            if op != b"F":
                raise ValueError(f"unknown request {op!r}")
            h, w = struct.unpack("<II", _read(inp, 8))
            frame = np.frombuffer(_read(inp, h * w * 3), np.uint8).reshape(h, w, 3)
            res = fm.process(frame)
            pts = np.full((N_POINTS, 3), np.nan, np.float32)
            faces = len(res.multi_face_landmarks or [])
            if faces:
                lm = res.multi_face_landmarks[0].landmark
                pts[:] = [(p.x * w, p.y * h, p.z * w) for p in lm]
            out.write(struct.pack("<i", faces) + pts.astype("<f4").tobytes())
            out.flush()
    finally:
        fm.close()


if __name__ == "__main__":
    main()
