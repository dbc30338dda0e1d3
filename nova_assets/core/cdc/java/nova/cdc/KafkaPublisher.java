package nova.cdc;

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import java.io.BufferedWriter;
import java.io.FileWriter;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Debezium's change consumer for `nova cdc`: each batch goes to Kafka from the JVM, and is
 * acknowledged to Debezium only after Kafka acknowledged every message of it.
 *
 * <p>It replaces a Python handler that took every change across JPype (key, value and topic as
 * Java strings, each a proxied object to convert and later release): that hop cost about half of
 * the Debezium process's CPU per change. Python still owns the process: it starts the JVM, builds
 * the engine, reads the counters below for the status file, and stops it.
 */
public final class KafkaPublisher implements DebeziumEngine.ChangeConsumer<ChangeEvent<String, String>> {
  private final KafkaProducer<String, String> producer;
  private final long ackTimeoutMs;
  private final BufferedWriter stages;
  private final ThreadMXBean threads = ManagementFactory.getThreadMXBean();
  private final AtomicLong changes = new AtomicLong();
  private final AtomicLong batches = new AtomicLong();
  private final AtomicLong cpuNanos = new AtomicLong();
  private volatile long lastBatchMillis;
  private volatile String failure;

  /**
   * @param producerConfig the Kafka producer's settings (serializers are set here)
   * @param ackTimeoutMs how long a batch may wait for Kafka's acknowledgements before the engine stops
   * @param stageLog a file for one line of stage times per change (`nova bench cdc`), or null
   */
  public KafkaPublisher(Properties producerConfig, long ackTimeoutMs, String stageLog) throws IOException {
    Properties config = new Properties();
    config.putAll(producerConfig);
    config.put("key.serializer", StringSerializer.class.getName());
    config.put("value.serializer", StringSerializer.class.getName());
    this.producer = new KafkaProducer<>(config);
    this.ackTimeoutMs = ackTimeoutMs;
    this.stages = stageLog == null ? null : new BufferedWriter(new FileWriter(stageLog, true), 1 << 20);
  }

  @Override
  public void handleBatch(
      List<ChangeEvent<String, String>> records,
      DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer)
      throws InterruptedException {
    long cpu0 = threads.getCurrentThreadCpuTime();
    long seen = System.currentTimeMillis();
    List<Future<RecordMetadata>> sent = new ArrayList<>(records.size());
    try {
      for (ChangeEvent<String, String> record : records) {
        sent.add(producer.send(new ProducerRecord<>(record.destination(), record.key(), record.value())));
      }
      producer.flush();
    } catch (RuntimeException e) { // e.g. no metadata for max.block.ms: the broker is gone
      failure = "Kafka did not take a batch of " + records.size() + ": " + e;
      throw e;
    }
    long deadline = System.currentTimeMillis() + ackTimeoutMs;
    try {
      for (Future<RecordMetadata> ack : sent) {
        ack.get(Math.max(1, deadline - System.currentTimeMillis()), TimeUnit.MILLISECONDS);
      }
    } catch (ExecutionException | TimeoutException e) {
      Throwable cause = e instanceof ExecutionException ? e.getCause() : e;
      failure = "Kafka did not take a change of a batch of " + records.size() + ": " + cause;
      throw new RuntimeException(failure, cause);
    }
    long acked = System.currentTimeMillis();
    if (stages != null) {
      writeStages(records, seen, acked);
    }
    for (ChangeEvent<String, String> record : records) {
      committer.markProcessed(record);
    }
    committer.markBatchFinished();
    changes.addAndGet(records.size());
    batches.incrementAndGet();
    lastBatchMillis = acked;
    cpuNanos.addAndGet(threads.getCurrentThreadCpuTime() - cpu0);
  }

  @Override
  public boolean supportsTombstoneEvents() {
    return true;
  }

  private void writeStages(List<ChangeEvent<String, String>> records, long seen, long acked) {
    try {
      for (ChangeEvent<String, String> record : records) {
        String value = record.value();
        if (value == null) {
          continue;
        }
        stages.write(number(value, "\"__lsn\":") + "," + number(value, "\"__source_ts_ms\":") + ","
            + number(value, "\"__ts_ms\":") + "," + seen + "," + acked + "\n");
      }
      stages.flush();
    } catch (IOException e) {
      failure = "writing the stage log failed: " + e;
      throw new RuntimeException(failure, e);
    }
  }

  /** The integer after `field` in a flat JSON object, "" when absent or null. */
  static String number(String json, String field) {
    int at = json.indexOf(field);
    if (at < 0) {
      return "";
    }
    int start = at + field.length();
    int end = start;
    while (end < json.length() && (Character.isDigit(json.charAt(end)) || json.charAt(end) == '-')) {
      end++;
    }
    return json.substring(start, end);
  }

  public long changes() {
    return changes.get();
  }

  public long batches() {
    return batches.get();
  }

  /** The CPU seconds the engine's thread spent in this consumer (sending, waiting excluded). */
  public double handlerCpuSeconds() {
    return cpuNanos.get() / 1e9;
  }

  public long lastBatchMillis() {
    return lastBatchMillis;
  }

  /** Why the last batch failed, or null. */
  public String failure() {
    return failure;
  }

  public void close() throws IOException {
    producer.close(java.time.Duration.ofSeconds(10));
    if (stages != null) {
      stages.close();
    }
  }
}
