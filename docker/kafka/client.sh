# Sourced by the Kafka healthcheck and kafka-init: a client configuration for the broker's admin
# (SASL PLAIN over the private network), written to a private temporary file; CLIENT_CONFIG names it.
CLIENT_CONFIG="$(mktemp)"
chmod 600 "$CLIENT_CONFIG"
printf 'security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="%s";\n' \
  "${ADMIN_PASSWORD:?ADMIN_PASSWORD is not set}" > "$CLIENT_CONFIG"
export CLIENT_CONFIG
