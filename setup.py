"""Packaging for latentpress.

The TF / tf.Transform / tfx-bsl / Beam versions must agree with each other, so they
are pinned to one minor release; everything else floats within the range we test.
"""

from setuptools import find_packages, setup

# Versions that must agree (see README "Dependencies").
PINNED = [
    "tensorflow==2.21.*",
    "tensorflow-transform==1.21.*",
    "tfx-bsl==1.21.*",
    "apache-beam[gcp]==2.77.*",
]

FLOATING = [
    "google-cloud-storage>=2.18,<4",
    "numpy>=1.26,<2.5",  # Beam 2.77 caps numpy below 2.5
    "pillow>=11.3,<13",  # 11.3 wheels bring AVIF (evaluate compares against it)
    "pillow-jxl-plugin>=1.3,<2",  # JPEG XL in evaluate, and its lossless JPEG recompression
    "scikit-image>=0.24,<0.27",  # also ships the embedded sample photographs
    "constriction>=0.4,<0.6",
    "tqdm>=4.66,<5",
    "tensorboard>=2.19,<3",  # tf.summary needs it; TF 2.21 no longer depends on it
    # evaluate: Bjøntegaard fits, plots, classical denoisers
    "scipy>=1.11,<2",
    "matplotlib>=3.8,<4",
    "opencv-python-headless>=4.10,<6",
    "bm3d>=4.0,<5",
]

TEST = [
    "pytest>=8,<10",
    "pytest-xdist>=3.5,<4",  # make test: one worker per core
    "ruff>=0.6,<1",
    "gcp-storage-emulator>=2024.8,<2030",
]

setup(
    name="latentpress",
    version="0.2.0",
    description="Clean and compress image archives with learned models, on Apache Beam.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["latentpress*", "pipelines*", "transforms*", "models*"]),
    include_package_data=True,
    package_data={"models": ["pretrained/*/*", "pretrained/*/*/*", "pretrained/*/*/*/*"]},
    install_requires=PINNED + FLOATING,
    extras_require={"test": TEST},
    entry_points={"console_scripts": ["latentpress=latentpress.cli:main"]},
)
