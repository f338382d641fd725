# Multi-stage build of the copilot-broker binaries.
#
# One build stage compiles every binary statically; one small final stage per
# binary copies only its own executable onto distroless/static (CA certificates,
# /etc/passwd with the nonroot user, no shell, no package manager). Build one with
#
#   docker build --target broker  -t copilot-broker/broker:v0.1.0 .
#   docker build --target proxy   -t copilot-broker/proxy:v0.1.0 .
#   docker build --target sandbox -t copilot-broker/sandbox:v0.1.0 .
#
# Without --target the last stage (broker) is built. The build stage runs on the
# builder's own platform and cross-compiles for TARGETOS/TARGETARCH, so
# `docker buildx build --platform linux/amd64,linux/arm64` needs no emulation.

ARG GO_IMAGE=golang:1.26-bookworm
# The nonroot tag runs as uid/gid 65532. Pin by digest in your CI
# (distroless/static-debian12:nonroot@sha256:...) for reproducible images.
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
ARG TARGETOS
ARG TARGETARCH
# Never fetch another Go toolchain: the image's Go must satisfy go.mod.
ENV GOTOOLCHAIN=local CGO_ENABLED=0
WORKDIR /src
# Dependencies first, so source edits reuse the cached module download layer.
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
RUN GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/ ./cmd/...

FROM ${RUNTIME_IMAGE} AS sandbox
COPY --from=build /out/sandbox /sandbox
USER 65532:65532
ENTRYPOINT ["/sandbox"]

FROM ${RUNTIME_IMAGE} AS proxy
COPY --from=build /out/proxy /proxy
USER 65532:65532
# 4141 serves clients; 4142 serves /healthz, /readyz and /metrics.
EXPOSE 4141 4142
ENTRYPOINT ["/proxy"]
CMD ["serve"]

FROM ${RUNTIME_IMAGE} AS broker
COPY --from=build /out/broker /broker
USER 65532:65532
# 50051 gRPC, 8080 REST gateway, 8081 /healthz, /readyz and /metrics.
EXPOSE 50051 8080 8081
ENTRYPOINT ["/broker"]
CMD ["serve"]
