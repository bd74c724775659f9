"""The numbers of the paper and of CIE Lab, in one place.

Every other module imports these; none repeats them.
"""

# --- CIE Lab (sRGB, D65, 2° observer), as in skimage.color -------------------------------------
#: sRGB linear RGB -> XYZ matrix used by skimage.color (rows: X, Y, Z).
XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
#: D65 white point for the 2° observer (X, Y, Z), as in skimage.color.
D65_WHITE = (0.95047, 1.0, 1.08883)

# --- Network input / output normalisation (the authors' release) ---------------------------------
#: L of CIE Lab lies in [0, L_MAX].
L_MAX = 100.0
#: eccv16 centres L by this before its first layer ...
L_CENT = 50.0
#: ... and divides by this, so its input is in [-0.5, 0.5], as in the authors' release.
L_NORM = 100.0
#: ab is divided by this for regression outputs, so targets are in about [-1, 1].
AB_NORM = 110.0
#: The paper's networks give their output at 1/STRIDE of their input's resolution (its conv8);
#: the siggraph17 network's regression output is at full resolution (see ``out_stride``).
STRIDE = 4

# --- Quantisation and soft-encoding (paper, section 2.1) -----------------------------------------
#: Grid size of the ab quantisation.
GRID = 10.0
#: Number of in-gamut bins Q at grid 10.
Q = 313
#: Nearest neighbours used by the soft-encoding.
K_NEIGHBOURS = 5
#: Gaussian σ (ab units) of the soft-encoding and of the prior smoothing.
SIGMA = 5.0

# --- The full ab grid: the classes of the authors' SIGGRAPH 2017 network ------------------------
#: Its nodes lie at -GRID_MAX, -GRID_MAX + GRID, …, +GRID_MAX on each axis (colorization-pytorch's
#: ``ab_max``).
GRID_MAX = 110.0
#: Nodes per axis: 2 · GRID_MAX / GRID + 1 (colorization-pytorch's ``A``).
GRID_SIDE = 23
#: Its classes: every node of the grid, in gamut or not.
Q_GRID = GRID_SIDE * GRID_SIDE

# --- Class rebalancing (paper, section 2.2) -------------------------------------------------------
#: Weight λ of the uniform distribution mixed into the smoothed prior.
LAMBDA = 0.5

# --- Decoding (paper, section 2.3) ----------------------------------------------------------------
#: Annealed-mean temperature of the paper's results.
TEMPERATURE = 0.38
#: The smallest T accepted. Below it the annealed mean is the mode to well under one ab level,
#: and 1/T times the logits would overflow float32 long before T reaches float32's smallest
#: normal number (T = 1e-45 would decode to NaN).
MIN_TEMPERATURE = 1e-3
#: The largest T accepted: T = 1 decodes the mean of the predicted distribution.
MAX_TEMPERATURE = 1.0
#: The temperatures ``evaluate`` sweeps by default (1 is the mean, 0.01 nearly the mode).
TEMPERATURES = (1.0, 0.77, 0.58, 0.38, 0.29, 0.14, 0.01)
#: The numbers of colour points ``evaluate --hints`` suggests (the SIGGRAPH 2017 sweep's).
HINT_COUNTS = (0, 1, 2, 5, 10, 20, 50)

# --- Data and inference ---------------------------------------------------------------------
#: The side (px) the networks see: training photos are decoded at this short side, colorize and
#: evaluate resize L to it (square), and build-bins counts pixels at it.
WORKING_SIZE = 256
#: The smallest working size and training crop (px): a network output of 4 × 4.
MIN_WORKING_SIZE = 16
#: The smallest longer side (px) serve scales a preview down to.
MIN_PREVIEW_SIDE = 16
#: zlib level of PNG results, 0-9. On colorized 0.3 MP photos level 1 encodes about 4× faster
#: than zlib's default 6 (15.6 against 65.8 ms) for files about 7 % larger; level 0 writes files
#: 2.5× as large, and 9 takes 4× the time of 6 for files 2.6 % smaller. Encoding is most of the
#: CPU time a photo costs besides the network.
PNG_COMPRESS = 1
#: Share of a photo folder that train holds out for validation (keyed on each file's path).
VAL_FRACTION = 0.1
#: A picture is grayscale when no pixel has |a| or |b| above this (the authors' test).
GRAY_AB_THRESHOLD = 5.0
#: File suffixes treated as images when a folder is walked (build-bins, train, evaluate).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: colorize also takes GIFs (their first frame).
COLORIZE_SUFFIXES = (*IMAGE_SUFFIXES, ".gif")

# --- Limits on what one image file may cost (checked from its header, before decoding) ------------
#: The most pixels a loader makes when it resizes to a short side (build-bins' --size, train's
#: load size): 8192² px, 256 MB as RGBA.
MAX_RESIZED_PIXELS = 8192 * 8192
