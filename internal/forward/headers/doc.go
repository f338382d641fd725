// Package headers is the proxy's header stage: it builds the headers of a
// request to the Copilot API. The client's headers pass an allow list
// (docs/protocol.md section 4, "Request headers"), anthropic-beta values a
// beta filter; then the editor identity of the upstream profile, the
// endpoint's Openai-Intent, X-Interaction-Type, X-Request-Id and
// X-Agent-Task-Id, X-Initiator and Copilot-Vision-Request are set from the
// [Facts] the body scan learned.
//
// What a request carries upstream depends on the endpoint it is sent to
// (its target), which a translated request picks, never on the client's
// path. The package knows nothing of the handler: it takes paths, header
// maps and facts.
package headers
