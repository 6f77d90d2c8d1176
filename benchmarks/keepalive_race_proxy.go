// Traefik's proxying core for benchmarks/keepalive_race.py: httputil.ReverseProxy
// over Go's Transport, to http://frontend:8081, resolved at each new connection,
// with Traefik's default of 200 idle connections per host.
package main

import (
	"net/http"
	"net/http/httputil"
	"net/url"
)

func main() {
	target, _ := url.Parse("http://frontend:8081")
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{MaxIdleConnsPerHost: 200}
	if err := http.ListenAndServe(":8000", proxy); err != nil {
		panic(err)
	}
}
