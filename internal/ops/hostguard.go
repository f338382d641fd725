package ops

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// LoopbackHostsOnly guards a listener that serves without keys on loopback
// against DNS rebinding: a web page in the operator's browser can point a
// name it controls at 127.0.0.1 and then read the answers, but its requests
// carry that name as Host. Only Host values naming loopback ("localhost",
// "*.localhost", 127.0.0.0/8, ::1) or listenAddr's own host are served;
// others get 421 Misdirected Request.
func LoopbackHostsOnly(next http.Handler, listenAddr string) http.Handler {
	own, _, _ := net.SplitHostPort(listenAddr)
	own = strings.ToLower(strings.Trim(own, "[]"))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackHost(r.Host, own) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusMisdirectedRequest)
			fmt.Fprintf(w, "misdirected request: this server runs without keys and answers only loopback names (localhost, 127.0.0.1, [::1]), not %q\n", r.Host)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func loopbackHost(hostport, own string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	switch {
	case host == "":
		return true // HTTP/1.0 without Host: no browser sends that
	case host == "localhost" || strings.HasSuffix(host, ".localhost"):
		return true
	case own != "" && host == own:
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
