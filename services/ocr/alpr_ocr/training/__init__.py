"""Training the project's own plate recogniser (a small CRNN with CTC): synthetic plates, the model, the
training loop and its ONNX export. Training only: torch is imported by `model` and `train`, never by the
run-time recogniser (which runs the exported ONNX file on ONNX Runtime)."""
