package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

const dashboardFile = "grafana/copilot-broker.json"

// promExpr is one PromQL expression and where it was found.
type promExpr struct {
	where, expr string
}

// ruleExprs returns the expressions of the rule file and the names its
// recording rules make.
func ruleExprs(t *testing.T) (exprs []promExpr, recorded []string) {
	t.Helper()
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		t.Fatalf("parsing %s: %v", alertsFile, err)
	}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, promExpr{alertsFile + ": " + r.Alert + r.Record, r.Expr})
			if r.Record != "" {
				recorded = append(recorded, r.Record)
			}
		}
	}
	return exprs, recorded
}

// dashboard is the part of a Grafana dashboard that holds queries.
type dashboard struct {
	Panels     []dashPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type dashPanel struct {
	Title   string      `json:"title"`
	Type    string      `json:"type"`
	Panels  []dashPanel `json:"panels"` // a collapsed row's
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// labelValues is a Grafana variable query: label_values(selector, label).
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)

// dashboardExprs returns the PromQL of every panel target and query
// variable of the dashboard, with Grafana's interval variables replaced by
// durations (the $name variables sit inside label matchers' strings, where
// PromQL takes them as they are).
func dashboardExprs(t *testing.T) []promExpr {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("parsing %s: %v", dashboardFile, err)
	}
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")
	var out []promExpr
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type != "row" && p.Type != "text" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
			}
			for _, tg := range p.Targets {
				out = append(out, promExpr{dashboardFile + ": panel " + p.Title + " " + tg.RefID, grafanaVars.Replace(tg.Expr)})
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("%s: variable %s: query: %v", dashboardFile, v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("%s: variable %s: query %q is not label_values(selector, label)", dashboardFile, v.Name, q.Query)
			continue
		}
		out = append(out, promExpr{dashboardFile + ": variable " + v.Name, m[1]})
	}
	return out
}

// selectedMetrics parses expr with Prometheus' parser and returns the
// metric names its selectors name.
func selectedMetrics(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name != "" {
			names = append(names, name)
		}
		return nil
	})
	return names, nil
}

func TestSelectedMetrics(t *testing.T) {
	tests := []struct {
		expr    string
		want    []string
		wantErr bool
	}{
		{`sum by (a) (rate(x_total{a="1"}[5m]))`, []string{"x_total"}, false},
		{`a - on (k) b`, []string{"a", "b"}, false},
		{`{__name__="c"}`, []string{"c"}, false},
		{`histogram_quantile(0.9, rec:x:rate5m)`, []string{"rec:x:rate5m"}, false},
		{`sum(rate(x[5m])`, nil, true},
		{`x{a=}`, nil, true},
	}
	for _, tt := range tests {
		got, err := selectedMetrics(tt.expr)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("selectedMetrics(%q) = %v, %v; want %v (error %v)", tt.expr, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestPromQL parses every expression of the rule file and the dashboard
// with Prometheus' own parser, and checks that every metric one selects is
// exported by the running binaries (scraped from a sandbox, a broker and a
// proxy after traffic that makes the lazily created series exist) or made
// by a recording rule: the dashboard and the rules cannot drift from the
// code. Under -short only the parsing runs.
func TestPromQL(t *testing.T) {
	rules, recorded := ruleExprs(t)
	exprs := append(rules, dashboardExprs(t)...)
	used := map[string][]string{} // metric → where
	for _, e := range exprs {
		names, err := selectedMetrics(e.expr)
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", e.where, e.expr, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: %q selects no metric", e.where, e.expr)
		}
		for _, n := range names {
			used[n] = append(used[n], e.where)
		}
	}
	if testing.Short() {
		t.Skip("-short: the expressions parse; checking their metrics against running binaries is left out")
	}
	brokerText, proxyText := scrapeStack(t)
	known := metricFamilies(brokerText)
	for n := range metricFamilies(proxyText) {
		known[n] = true
	}
	for _, r := range recorded {
		known[r] = true
	}
	var missing []string
	for n, where := range used {
		if !known[n] {
			missing = append(missing, n+" (used by "+strings.Join(where, "; ")+")")
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("metric %s is neither exported by the running broker or proxy nor recorded by a rule", m)
	}
	if t.Failed() {
		var names []string
		for n := range known {
			if strings.HasPrefix(n, "copilot_") {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		t.Logf("the binaries exported: %s", strings.Join(names, " "))
	}
}
