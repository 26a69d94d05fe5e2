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
// config reload or a change in chat names builds a new one.
type Router struct {
	// from maps a chat whose events enter some route to where they go.
	from map[Endpoint][]target
	// all maps a connector with a `chats: all` endpoint to where events
	// from any of its chats go.
	all map[string][]target
	// takes reports whether a connector could have a chat of this id; a
	// `chats: all` destination gets only those (nil: every chat).
	takes func(connector, chat string) bool
}

// target is a destination: a fixed chat, or (sameChat) the chat with the
// origin's id on Connector, for connectors that keep a chat per origin chat.
type target struct {
	Endpoint
	sameChat bool
}

// NewRouter builds the fan-out table from routes, whose chats must be ids
// (see Bridge.resolveRoutes). An event from a chat goes to every other
// endpoint that receives, across all routes the chat sends into; a chat
// shared by two routes joins them only for its own events, so nothing
// loops between routes. takes, if not nil, filters `chats: all`
// destinations by chat id (see ChatIDChecker).
func NewRouter(routes []config.Route, takes func(connector, chat string) bool) *Router {
	r := &Router{from: map[Endpoint][]target{}, all: map[string][]target{}, takes: takes}
	for _, route := range routes {
		for i, src := range route.Endpoints {
			if !src.Direction.Sends() {
				continue
			}
			var targets []target
			for j, dst := range route.Endpoints {
				if j == i || !dst.Direction.Receives() {
					continue
				}
				targets = append(targets, target{Endpoint{dst.Connector, dst.Chat}, dst.Chats == config.AllChats})
			}
			if src.Chats == config.AllChats {
				r.all[src.Connector] = append(r.all[src.Connector], targets...)
			} else {
				k := Endpoint{src.Connector, src.Chat}
				r.from[k] = append(r.from[k], targets...)
			}
		}
	}
	return r
}

// Destinations returns where events from chat on connector go, each once
// and never the chat itself; nil when no route takes them.
func (r *Router) Destinations(connector, chat string) []Endpoint {
	exact, all := r.from[Endpoint{connector, chat}], r.all[connector]
	if len(exact)+len(all) == 0 {
		return nil
	}
	origin := Endpoint{connector, chat}
	out := make([]Endpoint, 0, len(exact)+len(all))
	for _, ts := range [2][]target{exact, all} {
		for _, t := range ts {
			d := t.Endpoint
			if t.sameChat {
				if r.takes != nil && !r.takes(d.Connector, chat) {
					continue
				}
				d.Chat = chat
			}
			if d == origin || containsEndpoint(out, d) {
				continue
			}
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func containsEndpoint(list []Endpoint, e Endpoint) bool {
	for _, x := range list {
		if x == e {
			return true
		}
	}
	return false
}
