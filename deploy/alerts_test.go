package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// ruleFile is the Prometheus rule file format (rule_files:), decoded strictly
// so a misspelt key such as `labes:` fails.
type ruleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert         string            `json:"alert,omitempty"`
	Record        string            `json:"record,omitempty"`
	Expr          string            `json:"expr"`
	For           string            `json:"for,omitempty"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// promDuration is Prometheus' duration syntax (units largest first, no sign).
var promDuration = regexp.MustCompile(`^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$`)

// metricName finds this project's metric names in an expression (not the
// copilot_ inside a recording rule's level:metric:operations name).
var metricName = regexp.MustCompile(`(?:^|[^:a-z0-9_])(copilot_[a-z0-9_]+)\b(?:[^:]|$)`)

const (
	alertsFile = "prometheus/rules.yaml"
	opsDoc     = "../docs/operations.md"
)

func TestAlertRules(t *testing.T) {
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		t.Fatalf("parsing %s: %v", alertsFile, err)
	}
	doc, err := os.ReadFile(opsDoc)
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedMetricSource(t)
	seen := map[string]bool{}
	n := 0
	for _, g := range f.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q has no name or no rules", g.Name)
		}
		for _, r := range g.Rules {
			n++
			if r.Record != "" {
				if err := checkRecord(r); err != "" {
					t.Errorf("group %s recording rule %q: %s", g.Name, r.Record, err)
				}
				if seen[r.Record] {
					t.Errorf("recording rule %s is defined twice", r.Record)
				}
				seen[r.Record] = true
				continue
			}
			if err := checkRule(r); err != "" {
				t.Errorf("group %s rule %q: %s", g.Name, r.Alert, err)
			}
			if seen[r.Alert] {
				t.Errorf("alert %s is defined twice", r.Alert)
			}
			seen[r.Alert] = true
			for _, sub := range metricName.FindAllStringSubmatch(r.Expr, -1) {
				m := sub[1]
				if !strings.Contains(string(doc), m) {
					t.Errorf("alert %s uses metric %s; %s does not document it", r.Alert, m, opsDoc)
				}
				if !strings.Contains(exported, `"`+m+`"`) {
					t.Errorf("alert %s uses metric %s; no non-test Go file under ../internal names it, so it would never fire", r.Alert, m)
				}
			}
		}
	}
	// The four conditions each need an alert.
	for _, want := range []string{"CopilotCredentialRejected", "CopilotTokenExpiringSoon", "CopilotTokenRefreshFailing", "CopilotProxyBrokerStreamDisconnected"} {
		if !seen[want] {
			t.Errorf("no alert %s in %s", want, alertsFile)
		}
	}
	if n == 0 {
		t.Errorf("%s holds no rules", alertsFile)
	}
}

// recordName is a recording rule's output name: level:metric:operations.
var recordName = regexp.MustCompile(`^[a-z_]+:[a-z0-9_]+(:[a-z0-9_]+)?$`)

// checkRecord returns what is wrong with a recording rule, or "".
func checkRecord(r rule) string {
	switch {
	case !recordName.MatchString(r.Record):
		return "record = " + r.Record + "; want level:metric:operations"
	case strings.TrimSpace(r.Expr) == "":
		return "no expr"
	case !balanced(r.Expr):
		return "expr has unbalanced brackets or quotes"
	case r.For != "" || len(r.Annotations) > 0:
		return "a recording rule takes no for or annotations"
	}
	return ""
}

// checkRule returns what is wrong with an alerting rule, or "".
func checkRule(r rule) string {
	switch {
	case r.Alert == "":
		return "not an alerting rule (no alert name)"
	case strings.TrimSpace(r.Expr) == "":
		return "no expr"
	case !balanced(r.Expr):
		return "expr has unbalanced brackets or quotes"
	case r.For == "" || !promDuration.MatchString(r.For):
		return "for = " + r.For + "; want a Prometheus duration such as 5m"
	case len(r.Labels) == 0:
		return "no labels"
	}
	switch r.Labels["severity"] {
	case "critical", "warning", "info":
	default:
		return "labels.severity = " + r.Labels["severity"] + "; want critical, warning or info"
	}
	if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
		return "annotations lack summary or description"
	}
	return ""
}

// balanced reports whether (), [] and {} nest properly outside quoted strings
// and double quotes pair up: a cheap guard against truncated expressions.
func balanced(expr string) bool {
	var stack []rune
	inQuote := false
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	for _, c := range expr {
		switch {
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == '(' || c == '[' || c == '{':
			stack = append(stack, c)
		case pairs[c] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return len(stack) == 0 && !inQuote
}

func TestCheckRule(t *testing.T) {
	good := rule{
		Alert: "A", Expr: `max by (pod) (m{status="REJECTED"}) == 1`, For: "1m",
		Labels:      map[string]string{"severity": "critical"},
		Annotations: map[string]string{"summary": "s", "description": "d"},
	}
	tests := []struct {
		name   string
		mutate func(*rule)
		ok     bool
	}{
		{"good", func(*rule) {}, true},
		{"no expr", func(r *rule) { r.Expr = " " }, false},
		{"unbalanced", func(r *rule) { r.Expr = "max by (pod) (m" }, false},
		{"no for", func(r *rule) { r.For = "" }, false},
		{"bad for", func(r *rule) { r.For = "5 minutes" }, false},
		{"compound for", func(r *rule) { r.For = "1h30m" }, true},
		{"no labels", func(r *rule) { r.Labels = nil }, false},
		{"bad severity", func(r *rule) { r.Labels = map[string]string{"severity": "page"} }, false},
		{"recording rule", func(r *rule) { r.Alert, r.Record = "", "x" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			tt.mutate(&r)
			if got := checkRule(r); (got == "") != tt.ok {
				t.Errorf("checkRule(%+v) = %q; want ok %v", r, got, tt.ok)
			}
		})
	}
}

// exportedMetricSource returns the non-test Go source of the main module's
// internal packages, where every metric the binaries export is named.
func exportedMetricSource(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir("../internal", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		b.Write(src)
		return err
	})
	if err != nil {
		t.Fatalf("reading ../internal: %v", err)
	}
	return b.String()
}
