package broker

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/store"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// RouteUsage is the REST route of QueryUsage. It is served by a handler
// beside the gateway, not by the gateway: its answer is the documented
// plain shape ({"rows": [{"key": "u1", "requests": 40, ...}]}: only the
// grouped fields, sums as JSON numbers, zeros included), or CSV with
// Accept: text/csv, neither of which protojson writes.
const RouteUsage = "/v1/usage"

// usageREST calls QueryUsage through conn (the gateway's connection, so the
// same interceptors authenticate and authorize) and writes the rows.
func usageREST(conn grpc.ClientConnInterface) http.Handler {
	client := brokerv1.NewUsageServiceClient(conn)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query()
		req := &brokerv1.QueryUsageRequest{
			From: v.Get("from"), To: v.Get("to"), GroupBy: v["group_by"],
			Key: v.Get("key"), Account: v.Get("account"), Model: v.Get("model"),
		}
		ctx := r.Context()
		if a := r.Header.Get("Authorization"); a != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", a)
		}
		resp, err := client.QueryUsage(ctx, req)
		if err != nil {
			st := status.Convert(err)
			writeJSONError(w, runtime.HTTPStatusFromCode(st.Code()), st.Code(), st.Message())
			return
		}
		// The groups as the service read them (it accepted them).
		q, _ := ParseUsageQuery(req, time.Now())
		groups := UsageGroups(q.GroupBy)
		if strings.Contains(r.Header.Get("Accept"), "text/csv") {
			w.Header().Set("Content-Type", "text/csv; charset=utf-8")
			_, _ = w.Write(UsageCSV(groups, resp.GetRows()))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(UsageJSON(groups, resp.GetRows()))
	})
}

// UsageGroups returns the grouped fields in the rows' column order.
func UsageGroups(groupBy []string) []string {
	var out []string
	for _, g := range []string{store.GroupKey, store.GroupAccount, store.GroupModel, store.GroupDay} {
		if slices.Contains(groupBy, g) {
			out = append(out, g)
		}
	}
	return out
}

// usageSums are the sums of a usage row, in order.
var usageSums = []string{"requests", "premium_requests", "premium_units", "input_tokens", "output_tokens", "cached_tokens"}

// usageCells returns a row's group fields and sums as text (premium units
// rounded to 6 decimals: sums of multipliers such as 0.33 carry float
// noise).
func usageCells(groups []string, r *brokerv1.UsageRow) []string {
	out := make([]string, 0, len(groups)+len(usageSums))
	for _, g := range groups {
		switch g {
		case store.GroupKey:
			out = append(out, r.GetKey())
		case store.GroupAccount:
			out = append(out, r.GetAccount())
		case store.GroupModel:
			out = append(out, r.GetModel())
		case store.GroupDay:
			out = append(out, r.GetDay())
		}
	}
	return append(out,
		strconv.FormatInt(r.GetRequests(), 10), strconv.FormatInt(r.GetPremiumRequests(), 10),
		strconv.FormatFloat(math.Round(r.GetPremiumUnits()*1e6)/1e6, 'f', -1, 64), strconv.FormatInt(r.GetInputTokens(), 10),
		strconv.FormatInt(r.GetOutputTokens(), 10), strconv.FormatInt(r.GetCachedTokens(), 10))
}

// UsageJSON writes {"rows": [...]}: each row the grouped fields (strings)
// and the sums (numbers).
func UsageJSON(groups []string, rows []*brokerv1.UsageRow) []byte {
	var b bytes.Buffer
	b.WriteString(`{"rows": [`)
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('{')
		for j, c := range usageCells(groups, r) {
			if j > 0 {
				b.WriteString(", ")
			}
			if j < len(groups) {
				name, _ := json.Marshal(groups[j])
				val, _ := json.Marshal(c)
				b.Write(name)
				b.WriteString(": ")
				b.Write(val)
				continue
			}
			b.WriteString(`"` + usageSums[j-len(groups)] + `": ` + c)
		}
		b.WriteByte('}')
	}
	b.WriteString("]}\n")
	return b.Bytes()
}

// UsageCSV writes a header line and one line a row.
func UsageCSV(groups []string, rows []*brokerv1.UsageRow) []byte {
	var b bytes.Buffer
	cw := csv.NewWriter(&b)
	_ = cw.Write(append(append([]string{}, groups...), usageSums...))
	for _, r := range rows {
		_ = cw.Write(usageCells(groups, r))
	}
	cw.Flush()
	return b.Bytes()
}
