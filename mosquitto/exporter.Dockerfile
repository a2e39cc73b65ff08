# syntax=docker/dockerfile:1
# sapcc/mosquitto-exporter on a busybox base: the upstream image is FROM scratch,
# so it has nothing a healthcheck could run. Same binary, plus wget.
FROM sapcc/mosquitto-exporter:0.8.0 AS exporter

FROM busybox:1.37.0
COPY --from=exporter /mosquitto_exporter /usr/local/bin/mosquitto_exporter
USER 65534:65534
EXPOSE 9234
# It serves /metrics only after its first connection to the broker.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD wget -q -O /dev/null http://127.0.0.1:9234/metrics || exit 1
ENTRYPOINT ["/usr/local/bin/mosquitto_exporter"]
