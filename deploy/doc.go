// Package deploy holds the deployment files of the copilot broker and proxy
// (the Kubernetes kustomize base under kubernetes/, sample Prometheus alerting
// rules under prometheus/) and the tests that check them, together with the
// repository's Dockerfile and .dockerignore.
//
// It is a module of its own so that the Kubernetes, kustomize and BuildKit
// dependencies of these tests stay out of the binaries' module. Run its tests
// with `cd deploy && go test ./...`.
package deploy
