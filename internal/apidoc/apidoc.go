// Package apidoc embeds the broker's generated OpenAPI v2 document.
//
// An embed directive cannot reach gen/ from here, so `make generate` copies the document
// that buf generates; `make check-generated` fails when the copy is stale.
package apidoc

import _ "embed"

//go:generate cp ../../gen/openapiv2/copilot/broker/v1/broker.swagger.json openapi.json

// OpenAPI is the OpenAPI v2 (Swagger) document of the broker's REST API.
//
//go:embed openapi.json
var OpenAPI []byte
