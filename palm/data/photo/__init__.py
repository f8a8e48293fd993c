"""Single-photo preprocessing: find the hand, its 21 landmarks, fit the hand model, segment it.

One concept per module (nothing here re-exports them; import from the defining module):

* :mod:`palm.data.photo.detect`: the MediaPipe palm detector and hand-landmark models
  (:func:`~palm.data.photo.detect.detect_hand`, :class:`~palm.data.photo.detect.HandDetection`).
* :mod:`palm.data.photo.fit`: the hand model fitted to the landmarks under a pinhole camera
  (:func:`~palm.data.photo.fit.fit_hand`, :class:`~palm.data.photo.fit.HandFit`, the
  ``palm-hand-params-v1`` files of :func:`~palm.data.photo.fit.load_hand_params`).
* :mod:`palm.data.photo.segment`: U^2-Net-p saliency refined with the fitted hand's silhouette
  (:func:`~palm.data.photo.segment.segment_hand`, :func:`~palm.data.photo.segment.silhouette_mask`,
  drawn by :mod:`palm.render.raster`).
* :mod:`palm.data.photo.pipeline`: the whole preprocessing and its check images
  (:func:`~palm.data.photo.pipeline.preprocess_photo`, :class:`~palm.data.photo.pipeline.PhotoResult`).

Pipeline (:func:`~palm.data.photo.pipeline.preprocess_photo`):

1. Detection: the MediaPipe palm detector (``palm_detection_full.tflite``: the photo
   letterboxed to 192x192 in ``[0, 1]``; 2016 SSD anchors; boxes + 7 palm keypoints; sigmoid
   scores; weighted NMS), then the MediaPipe landmark model (``hand_landmark_full.tflite``) on a
   224x224 crop rotated and scaled from the palm box as MediaPipe does (rotation from the wrist to
   the middle-finger MCP, box x2.6 shifted half a box towards the fingers), refined once on the
   crop derived from the first landmarks (x2.0, as MediaPipe's tracking pass). Both models run on
   ``ai_edge_litert``. Keypoints come back in MediaPipe order (``palm.hand.KEYPOINT_NAMES``) in
   full-image pixels (continuous coordinates: pixel ``(u, v)`` covers ``[u, u+1) x [v, v+1)``).
2. Handedness: MediaPipe's classifier assumes a **mirrored (selfie) image**; its "Right" on an
   ordinary, non-mirrored photo is a *left* hand. ``HandDetection.handedness`` is already
   swapped, i.e. it names the real hand of a normal photo. Pass ``mirrored=True`` for selfies.
3. Left hands are mirrored: the working image is the photo flipped horizontally, in which the hand
   is a right hand; everything in ``PhotoResult`` and ``HandFit`` lives in that working frame, and
   ``left=True`` records it (``PhotoResult.to_photo`` maps points back).
4. Fit: pose, shape and translation of ``palm.hand.load_hand("open")`` fitted to the landmarks
   under a pinhole camera with a fixed focal length ``f = 1.2 * max(H, W)`` (``FOCAL_FACTOR``;
   about a 45 degree field of view on the long side, a phone's main camera), principal point at
   the image centre. Initialisation: global orientation by Kabsch alignment of the rest palm to
   MediaPipe's world landmarks, depth from the ratio of metric to pixel size; then articulation to
   the world landmarks (3D), then everything to the 2D landmarks with pose and shape priors.
5. Segmentation: U^2-Net-p (``u2netp.onnx``, onnxruntime) saliency, thresholded, refined with the
   fitted silhouette (the project's one rasteriser, :mod:`palm.render.raster`); or the user's mask.

The camera is OpenCV (x right, y down, z forward) with ``Rt = diag(1, -1, -1, 1)``: world +y is
image up and the camera looks down world -z, so environment-map conventions (world up = +y) hold.
"""
