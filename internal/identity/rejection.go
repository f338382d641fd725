package identity

import (
	"bytes"
	"net/http"
)

// StatusClientNotSupported is the status GitHub and the Copilot API answer
// to an editor identity or API version they no longer accept.
const StatusClientNotSupported = 466

// rejectionPhrases, lower case, mark an answer as a refusal of the identity
// whatever its status (docs/protocol.md section 8).
var rejectionPhrases = [][]byte{
	[]byte("client not supported"),
	[]byte("api version no longer supported"),
	[]byte("version no longer supported"),
	[]byte("unsupported client version"),
}

// versionWords, lower case, name the identity's values: a 400 or 404 that
// names one of them refuses the identity rather than the request.
var versionWords = [][]byte{
	[]byte("editor version"), []byte("editor-version"), []byte("editor plugin version"), []byte("editor-plugin-version"),
	[]byte("api version"), []byte("x-github-api-version"), []byte("api-version"),
}

// IsRejection reports whether an upstream answer (the token exchange's or
// a Copilot API call's) refuses the upstream profile: 466, "client not
// supported", "API version no longer supported", or a 400 or 404 naming the
// editor or API version. Only the first 4 KiB of body are looked at.
func IsRejection(status int, body []byte) bool {
	if status == StatusClientNotSupported {
		return true
	}
	if status < 400 {
		return false
	}
	if len(body) > 4<<10 {
		body = body[:4<<10]
	}
	l := bytes.ToLower(body)
	for _, p := range rejectionPhrases {
		if bytes.Contains(l, p) {
			return true
		}
	}
	if status == http.StatusBadRequest || status == http.StatusNotFound {
		for _, w := range versionWords {
			if bytes.Contains(l, w) {
				return true
			}
		}
	}
	return false
}
