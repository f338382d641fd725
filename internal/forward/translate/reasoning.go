package translate

import "strings"

// Reasoning carried across dialects. A thinking block is signed by
// Anthropic and a reasoning item is encrypted by OpenAI; neither vendor can
// check the other's. So that a client can send reasoning back in its next
// turn (which both APIs want in a tool loop), the opaque field of the
// client's dialect wraps the upstream's:
//
//   - to a Messages client, an OpenAI reasoning item becomes a thinking
//     block whose signature is "openai:<item id>:<encrypted_content>";
//   - to a Responses client, a thinking block becomes a reasoning item whose
//     encrypted_content is "anthropic:<signature>" (redacted_thinking:
//     "anthropic-redacted:<data>").
//
// The readers unwrap them, so the upstream gets its own bytes back. Reasoning
// that was never wrapped (the other vendor's, or from Chat, which has no
// reasoning in its public API) is dropped and reported.

const (
	openAISigPrefix       = "openai:"
	anthropicEncPrefix    = "anthropic:"
	anthropicRedactPrefix = "anthropic-redacted:"
)

// signatureOf is the Messages signature of a reasoning part.
func signatureOf(p *Part) string {
	if p.Signature != "" {
		return p.Signature
	}
	if p.Encrypted != "" && !p.Redacted {
		return openAISigPrefix + p.ID + ":" + p.Encrypted
	}
	return ""
}

// encryptedOf is the Responses encrypted_content of a reasoning part.
func encryptedOf(p *Part) string {
	switch {
	case p.Redacted:
		return anthropicRedactPrefix + p.Encrypted
	case p.Signature != "":
		return anthropicEncPrefix + p.Signature
	}
	return p.Encrypted
}

// unwrapSignature fills a reasoning part read from a Messages request.
func unwrapSignature(p *Part) {
	if rest, ok := strings.CutPrefix(p.Signature, openAISigPrefix); ok {
		if id, enc, ok := strings.Cut(rest, ":"); ok {
			p.ID, p.Encrypted, p.Signature = id, enc, ""
		}
	}
}

// unwrapEncrypted fills a reasoning part read from a Responses request.
func unwrapEncrypted(p *Part) {
	if sig, ok := strings.CutPrefix(p.Encrypted, anthropicEncPrefix); ok {
		p.Signature, p.Encrypted, p.ID = sig, "", ""
	} else if data, ok := strings.CutPrefix(p.Encrypted, anthropicRedactPrefix); ok {
		p.Redacted, p.Encrypted, p.ID = true, data, ""
	}
}
