"""supmae: SupMAE (Supervised Masked Autoencoders) as a Hugging Face Transformers model."""

import re
from pathlib import Path

from setuptools import find_packages, setup


here = Path(__file__).parent
version = re.search(r'__version__ = "([^"]+)"', (here / "supmae" / "__init__.py").read_text()).group(1)

# Floors are the versions the test suite has been run with.
install_requires = [
    "torch>=2.14",
    "torchvision>=0.29",
    "transformers>=5.23,<6",
    "huggingface_hub>=2.4",
    "safetensors>=0.8",
    "numpy>=2.0",
    "pillow>=11.0",
    "pyyaml>=6.0",
]
extras = {
    "train": ["accelerate>=1.15", "datasets>=5.2", "timm>=1.0.31", "scikit-learn>=1.9", "tensorboard>=2.21"],
    # parameterized: Transformers' common test mixins (tests/test_transformers_common.py) import it.
    "dev": ["pytest>=9.2", "ruff>=0.17", "parameterized>=0.9"],
    # ONNX export through Transformers' exporters and running it with ONNX Runtime (docs/DEPLOY.md).
    "deploy": ["onnx>=1.23", "onnxscript>=0.7", "onnxruntime>=1.32"],
    # --corrupt: ImageNet-C's corruptions on the fly (a maintained port of Hendrycks' code; numpy 2.4, Pillow 13 and
    # scikit-image 0.26 checked)
    "corrupt": ["imagecorruptions-imaug>=1.1.5"],
}
extras["dev"] += extras["train"] + extras["corrupt"] + extras["deploy"]

setup(
    name="supmae",
    version=version,
    description="SupMAE (Supervised Masked Autoencoders) as a first-class Hugging Face Transformers model",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["supmae", "supmae.*"]),
    package_data={"supmae.reports": ["templates/*.md"], "supmae.data": ["ade20k_classes.txt"]},
    entry_points={"console_scripts": ["supmae-convert = supmae.interop.convert:cli"]},
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require=extras,
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
