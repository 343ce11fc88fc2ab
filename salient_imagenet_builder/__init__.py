__version__ = "0.1.0"

import warnings

# timm 1.0.3 (our lowest supported) decorates a model (hrnet) with `torch.jit.interface`, which torch 2.14 reports
# on every `import timm`: a stray line on stderr that says nothing to our users, whose errors are one line.
warnings.filterwarnings("ignore", message="`torch.jit.interface` is deprecated", category=FutureWarning)
