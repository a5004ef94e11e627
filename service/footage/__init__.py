"""Raw fixed-camera footage -> tracklets: frame reader, person detectors, tracker, cutter and crops.

Torch-free (onnxruntime, OpenCV, numpy, scipy). ``service.footage.pipeline.run_footage`` runs the stages;
the API's footage jobs sample, embed and enroll or query the tracklets it hands out.
"""
