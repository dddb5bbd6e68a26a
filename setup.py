"""The one compiled module (metadata is in pyproject.toml): the Maglev table fill of ip_vs_mh.c,
a sequential walk of ~35,000 probes per rebuild that costs milliseconds in Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pylvs.sched._maglev", ["pylvs/sched/_maglev.c"])])
