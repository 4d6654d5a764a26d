"""One local Spark session for the tests of this folder (skipped without pyspark or Java)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``local[2]`` SparkSession: UI off, 4 shuffle partitions, UTC, every file under a tmp dir.

    ``PYSPARK_PYTHON`` is this interpreter (Spark's Python workers would otherwise take
    ``python3`` from PATH, outside the venv). No Hive support, so no ``metastore_db/`` or
    ``derby.log``; the warehouse and scratch dirs are in tmp, never in the repo.
    """
    pytest.importorskip("pyspark")
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        pytest.skip("pyspark is installed but Java is not")
    from pyspark.sql import SparkSession

    tmp: Path = tmp_path_factory.mktemp("spark")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYSPARK_PYTHON", sys.executable)
        mp.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        session = (
            SparkSession.builder.master("local[2]")
            .appName("omnicrm-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.default.parallelism", "2")
            .config("spark.driver.memory", "2g")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.warehouse.dir", str(tmp / "warehouse"))
            .config("spark.local.dir", str(tmp / "local"))
            .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={tmp}")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()
