"""Named Beam runner presets: ``beam_pipeline_args`` for the ExampleGen, StatisticsGen, Transform
and Evaluator, checked when the pipeline is built.

A preset names a runner and the options it cannot run without; ``beam_args`` fills them from
keyword options and fails, naming the preset and every missing option, before any component runs
(a Dataflow job missing its ``temp_location`` otherwise fails minutes in, inside the ExampleGen).

- ``in_memory``: one process, one worker; the tests (fast start, deterministic).
- ``multi_processing``: the DirectRunner with one worker process per core; the local demo.
- ``dataflow``: Google Cloud Dataflow (the Vertex pipeline).
- ``flink`` / ``spark``: a portable job server in front of an existing cluster.
- ``dask``: Beam's DaskRunner on a ``dask.distributed`` scheduler. Not for the pipeline on Beam
  2.59 (``pipeline_beam_args`` refuses it, saying why); ``bench/beam_scaling.py`` runs the part
  of the ExampleGen graph it can run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Tuple

IN_MEMORY = "in_memory"
MULTI_PROCESSING = "multi_processing"
DATAFLOW = "dataflow"
FLINK = "flink"
SPARK = "spark"
DASK = "dask"

# Option names (the --flag without dashes).
NUM_WORKERS = "direct_num_workers"
PROJECT, REGION, TEMP_LOCATION = "project", "region", "temp_location"
SDK_CONTAINER_IMAGE = "sdk_container_image"
FLINK_MASTER = "flink_master"
SPARK_MASTER_URL = "spark_master_url"
DASK_CLIENT_ADDRESS = "dask_client_address"
ENVIRONMENT_TYPE = "environment_type"


# Presets that build valid arguments but cannot run the pipeline's components, and why
# (BUILD_NOTES "Beam engines: in memory, multi-processing, Dask").
NOT_FOR_PIPELINE: Dict[str, str] = {
    DASK: ("Beam 2.59's DaskRunner hands every pipeline option to dask's Client (it fails on "
           "'runner' before any work) and runs neither side inputs nor tagged outputs, which "
           "the ExampleGen, StatisticsGen and Transform all use"),
}


@dataclasses.dataclass(frozen=True)
class Preset:
  """A runner's fixed arguments, the options it needs, and defaults for the others it takes."""
  fixed: Tuple[str, ...]
  required: Tuple[str, ...] = ()
  defaults: Tuple[Tuple[str, str], ...] = ()


PRESETS: Dict[str, Preset] = {
    IN_MEMORY: Preset(fixed=("--direct_running_mode=in_memory", f"--{NUM_WORKERS}=1")),
    # 0 would mean "one per core" too, but an explicit count is what the console and the
    # BUILD_NOTES figures name.
    MULTI_PROCESSING: Preset(fixed=("--direct_running_mode=multi_processing",),
                             defaults=((NUM_WORKERS, str(os.cpu_count() or 1)),)),
    DATAFLOW: Preset(fixed=("--runner=DataflowRunner",),
                     required=(PROJECT, REGION, TEMP_LOCATION),
                     defaults=((SDK_CONTAINER_IMAGE, ""),)),
    # LOOPBACK runs the Python workers in this process's machine: right for a local cluster;
    # a remote one needs environment_type=DOCKER (and the image).
    FLINK: Preset(fixed=("--runner=FlinkRunner",), required=(FLINK_MASTER,),
                  defaults=((ENVIRONMENT_TYPE, "LOOPBACK"),)),
    SPARK: Preset(fixed=("--runner=SparkRunner",), required=(SPARK_MASTER_URL,),
                  defaults=((ENVIRONMENT_TYPE, "LOOPBACK"),)),
    DASK: Preset(fixed=("--runner=apache_beam.runners.dask.dask_runner.DaskRunner",),
                 required=(DASK_CLIENT_ADDRESS,)),
}


def beam_args(preset: str, **options: str) -> List[str]:
  """``beam_pipeline_args`` for a named preset.

  Args:
    preset: one of ``PRESETS``.
    **options: values for the preset's required options and overrides of its defaults, by option
      name (``project="p"``); an empty value counts as missing.

  Returns:
    The arguments, fixed ones first, options in name order.

  Raises:
    ValueError: an unknown preset, an option the preset does not take, or a required option that
      is missing or empty.
  """
  if preset not in PRESETS:
    raise ValueError(f"unknown Beam preset {preset!r}; expected one of {sorted(PRESETS)}")
  spec = PRESETS[preset]
  known = set(spec.required) | {k for k, _ in spec.defaults}
  unknown = sorted(set(options) - known)
  if unknown:
    raise ValueError(f"Beam preset {preset!r} does not take option(s) {unknown}; it takes "
                     f"{sorted(known) or 'none'}")
  missing = [k for k in spec.required if not options.get(k)]
  if missing:
    raise ValueError(f"Beam preset {preset!r} needs {', '.join(f'--{k}' for k in missing)} "
                     f"(got {options or 'no options'})")
  values = dict(spec.defaults)
  values.update(options)
  if NUM_WORKERS in values and not (values[NUM_WORKERS].isdigit()
                                    and int(values[NUM_WORKERS]) >= 1):
    raise ValueError(f"Beam preset {preset!r}: {NUM_WORKERS} must be a whole number >= 1, got "
                     f"{values[NUM_WORKERS]!r}")
  return list(spec.fixed) + [f"--{k}={v}" for k, v in sorted(values.items()) if v]



def pipeline_beam_args(preset: str, **options: str) -> List[str]:
  """:func:`beam_args` for the pipeline's components: also refuses ``NOT_FOR_PIPELINE`` presets."""
  args = beam_args(preset, **options)
  if preset in NOT_FOR_PIPELINE:
    raise ValueError(f"Beam preset {preset!r} cannot run this pipeline: "
                     f"{NOT_FOR_PIPELINE[preset]}")
  return args
