"""Rule run_settings: the validated config, the data sources and the package versions of the run."""

import platform
from importlib import metadata
from pathlib import Path

import yaml

from kdinv.runtime import start_job

log = start_job(snakemake.log[0])
packages = ["torch", "torchvision", "numpy", "pandas", "pyarrow", "scikit-learn", "scipy", "h5py",
            "matplotlib", "seaborn", "snakemake", "jsonschema", "pyyaml"]
versions = {}
for name in packages:
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = "not installed"
config = snakemake.params.config
settings = {
    "data_sources": {name: ds["source"] for name, ds in config["datasets"].items()},
    "python": platform.python_version(),
    "platform": platform.platform(),
    "packages": versions,
    "config": config,
}
out = Path(snakemake.output[0])
tmp = out.with_suffix(".tmp")
tmp.write_text(yaml.safe_dump(settings, sort_keys=False))
tmp.replace(out)
log.info("settings written to %s", out)
