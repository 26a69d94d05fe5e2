package bridge

import (
	"github.com/phonebridge/phonebridge/config"
)

// Endpoint is one chat on one connector, as routes name them.
type Endpoint struct {
	Connector string
	Chat      string
}

func (e Endpoint) String() string { return e.Connector + "/" + e.Chat }

// Router knows, for every chat, where its events go. It is immutable; a
// config reload builds a new one.
type Router struct {
	// from maps a chat whose events enter some route to every chat that
	// receives them: each once, never the chat itself.
	from map[Endpoint][]Endpoint
}

// NewRouter builds the fan-out table from routes. An event from a chat goes
// to every other endpoint that receives, across all routes the chat sends
// into; a chat shared by two routes joins them only for its own events, so
// nothing loops between routes.
func NewRouter(routes []config.Route) *Router {
	r := &Router{from: map[Endpoint][]Endpoint{}}
	seen := map[[2]Endpoint]bool{}
	for _, route := range routes {
		for _, src := range route.Endpoints {
			if !src.Direction.Sends() {
				continue
			}
			s := Endpoint{src.Connector, src.Chat}
			for _, dst := range route.Endpoints {
				d := Endpoint{dst.Connector, dst.Chat}
				if d == s || !dst.Direction.Receives() || seen[[2]Endpoint{s, d}] {
					continue
				}
				seen[[2]Endpoint{s, d}] = true
				r.from[s] = append(r.from[s], d)
			}
		}
	}
	return r
}

// Destinations returns where events from chat on connector go; nil when
// no route takes them.
func (r *Router) Destinations(connector, chat string) []Endpoint {
	return r.from[Endpoint{connector, chat}]
}
