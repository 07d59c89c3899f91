"""``python -m leadtrain.models.tfv6``: which encoders TFv6 builds here (timm, or the built-in ResNets and why);
exit status 1 when timm is installed but does not import (``make`` then removes it and its torchvision)."""

import sys

from leadtrain.models.tfv6.encoders import main

sys.exit(main())
