// Package identity is the one home of the editor identity that the broker's
// token exchange and the proxy's Copilot API calls both present
// (docs/protocol.md sections 2 and 4): Editor-Version,
// Editor-Plugin-Version, User-Agent, Copilot-Integration-Id and the two
// X-GitHub-Api-Version values.
//
// GitHub does not document these values. The defaults are the newest
// matched set of docs/protocol.md section 8 (VS Code 1.140.0 with Copilot
// Chat 0.68.0, a version pin dated 2026-10-02, and the API version the
// bundled API package puts on the wire). A year-old or mismatched set risks
// HTTP 466 "client not supported" and hidden models. At run time the broker
// holds the set as an upstream profile ([Profile], --upstream-profile) and
// pushes it to the proxies; docs/operations.md says how to roll out a new
// one.
package identity

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// The defaults, the one place in the code that names them: the newest
// matched set of docs/protocol.md section 8 (December 2026 review), where
// each value's source and date are recorded.
const (
	DefaultEditorVersion       = "vscode/1.140.0"
	DefaultEditorPluginVersion = "copilot-chat/0.68.0"
	DefaultUserAgent           = "GitHubCopilotChat/0.68.0"
	DefaultIntegrationID       = "vscode-chat"
	// DefaultExchangeAPIVersion is X-GitHub-Api-Version of the token
	// exchange (GitHub's API); DefaultAPIVersion that of Copilot API calls.
	DefaultExchangeAPIVersion = "2025-04-01"
	DefaultAPIVersion         = "2026-08-01"
)

// Editor is the client identity. Zero fields take the defaults
// ([Editor.WithDefaults]).
type Editor struct {
	Version            string // Editor-Version, NAME/X.Y.Z
	PluginVersion      string // Editor-Plugin-Version, NAME/X.Y.Z
	UserAgent          string // User-Agent
	IntegrationID      string // Copilot-Integration-Id (Copilot API calls only)
	ExchangeAPIVersion string // X-GitHub-Api-Version of the token exchange
	APIVersion         string // X-GitHub-Api-Version of Copilot API calls
}

// Default returns the default identity.
func Default() Editor {
	return Editor{
		Version:            DefaultEditorVersion,
		PluginVersion:      DefaultEditorPluginVersion,
		UserAgent:          DefaultUserAgent,
		IntegrationID:      DefaultIntegrationID,
		ExchangeAPIVersion: DefaultExchangeAPIVersion,
		APIVersion:         DefaultAPIVersion,
	}
}

// WithDefaults returns e with every empty field set to its default.
func (e Editor) WithDefaults() Editor {
	d := Default()
	pick := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	pick(&e.Version, d.Version)
	pick(&e.PluginVersion, d.PluginVersion)
	pick(&e.UserAgent, d.UserAgent)
	pick(&e.IntegrationID, d.IntegrationID)
	pick(&e.ExchangeAPIVersion, d.ExchangeAPIVersion)
	pick(&e.APIVersion, d.APIVersion)
	return e
}

// Validate checks the shape of the versions the Copilot API checks (it
// answers 400 to a malformed Editor-Version): NAME/X.Y.Z for Editor-Version
// and Editor-Plugin-Version, YYYY-MM-DD for the API versions. Empty fields
// are taken as their defaults.
func (e Editor) Validate() error {
	e = e.WithDefaults()
	var errs []error
	if _, _, err := ParseVersion(e.Version); err != nil {
		errs = append(errs, fmt.Errorf("editor version: %w", err))
	}
	if _, _, err := ParseVersion(e.PluginVersion); err != nil {
		errs = append(errs, fmt.Errorf("editor plugin version: %w", err))
	}
	for name, v := range map[string]string{"exchange API version": e.ExchangeAPIVersion, "API version": e.APIVersion} {
		if !apiVersionRE.MatchString(v) {
			errs = append(errs, fmt.Errorf("%s %q: want YYYY-MM-DD", name, v))
		}
	}
	for name, v := range map[string]string{"user agent": e.UserAgent, "integration id": e.IntegrationID} {
		if strings.ContainsAny(v, "\r\n") {
			errs = append(errs, fmt.Errorf("%s: line breaks not allowed", name))
		}
	}
	return errors.Join(errs...)
}

var (
	apiVersionRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)
	versionRE    = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9._-]*)/(\d+)\.(\d+)\.(\d+)([-+][0-9A-Za-z.+-]*)?$`)
)

// Version is a NAME/X.Y.Z version's numbers.
type Version [3]int

// Less reports whether v is older than w.
func (v Version) Less(w Version) bool {
	for i := range v {
		if v[i] != w[i] {
			return v[i] < w[i]
		}
	}
	return false
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

// ParseVersion parses an Editor-Version or Editor-Plugin-Version value,
// NAME/X.Y.Z with an optional -suffix (e.g. "vscode/1.111.0-insider").
func ParseVersion(s string) (name string, v Version, err error) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return "", Version{}, fmt.Errorf("%q: want NAME/X.Y.Z, e.g. %s", s, DefaultEditorVersion)
	}
	for i := range v {
		n, err := strconv.Atoi(m[2+i])
		if err != nil || n > 1_000_000 {
			return "", Version{}, fmt.Errorf("%q: version number out of range", s)
		}
		v[i] = n
	}
	return m[1], v, nil
}

// SetExchangeHeaders sets the identity headers of the token exchange
// (docs/protocol.md section 2) on h.
func (e Editor) SetExchangeHeaders(h http.Header) {
	e = e.WithDefaults()
	h.Set("X-Github-Api-Version", e.ExchangeAPIVersion)
	h.Set("Editor-Version", e.Version)
	h.Set("Editor-Plugin-Version", e.PluginVersion)
	h.Set("User-Agent", e.UserAgent)
}

// SetAPIHeaders sets the identity headers of a Copilot API call
// (docs/protocol.md section 4) on h.
func (e Editor) SetAPIHeaders(h http.Header) {
	e = e.WithDefaults()
	h.Set("Copilot-Integration-Id", e.IntegrationID)
	h.Set("Editor-Version", e.Version)
	h.Set("Editor-Plugin-Version", e.PluginVersion)
	h.Set("User-Agent", e.UserAgent)
	h.Set("X-Github-Api-Version", e.APIVersion)
}

// Use says which calls a command makes, and so which identity flags it has.
type Use uint8

const (
	// Exchange: the broker's token exchange.
	Exchange Use = 1 << iota
	// API: the proxy's Copilot API calls.
	API
)

// FlagNames are the identity flags; a 466 answer names them.
const FlagNames = "--editor-version, --editor-plugin-version, --user-agent"

// ProfileAdvice is what an identity refusal tells the operator to change.
const ProfileAdvice = "edit the broker's --upstream-profile file (docs/operations.md, \"Rolling out a new upstream profile\")"

// RegisterFlags binds the identity flags for use onto e: --editor-version,
// --editor-plugin-version, --user-agent; --exchange-api-version for
// Exchange; --integration-id and --github-api-version for API. Their
// defaults are empty: an empty flag takes the upstream profile's value (the
// broker's --upstream-profile file, else the built-in default), a set one
// overrides it: on the broker under the keys its profile file leaves out,
// on a proxy over the profile the broker pushes (the proxy logs that).
func (e *Editor) RegisterFlags(fs *flag.FlagSet, use Use) {
	d := Default()
	what, over := "sent to the Copilot API", "; overrides the broker's upstream profile"
	if use == Exchange {
		what, over = "of the token exchange", "; the --upstream-profile file's key wins"
	}
	usage := func(s, def string) string { return s + " (empty: the upstream profile's, built in " + def + over + ")" }
	fs.StringVar(&e.Version, "editor-version", "", usage("Editor-Version header "+what+", NAME/X.Y.Z, one matched set with --editor-plugin-version and --user-agent", d.Version))
	fs.StringVar(&e.PluginVersion, "editor-plugin-version", "", usage("Editor-Plugin-Version header "+what, d.PluginVersion))
	fs.StringVar(&e.UserAgent, "user-agent", "", usage("User-Agent header "+what, d.UserAgent))
	if use&Exchange != 0 {
		fs.StringVar(&e.ExchangeAPIVersion, "exchange-api-version", "", usage("X-GitHub-Api-Version header of the token exchange", d.ExchangeAPIVersion))
	}
	if use&API != 0 {
		fs.StringVar(&e.IntegrationID, "integration-id", "", usage("Copilot-Integration-Id header sent to the Copilot API", d.IntegrationID))
		fs.StringVar(&e.APIVersion, "github-api-version", "", usage("X-GitHub-Api-Version header sent to the Copilot API", d.APIVersion))
	}
}
