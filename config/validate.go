package config

import (
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"
)

// connectorName is what a connector may be called: its name becomes part
// of environment variable names and log fields.
var connectorName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// Validate checks c and returns a *Problems listing everything wrong, or
// nil. On a Config built in code problems have no line numbers; Parse
// runs it too and adds them.
func (c *Config) Validate() error {
	var items []Problem
	c.validate(&items)
	if len(items) == 0 {
		return nil
	}
	return &Problems{File: c.Path, Items: items}
}

func (c *Config) validate(items *[]Problem) {
	ck := NewChecker("", items)
	ck.Required("state_dir", c.StateDir)
	ck.OneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	ck.OneOf("log.format", c.Log.Format, "text", "json")
	ck.OneOf("store.sync", c.Store.Sync, "normal", "full")
	switch keep := c.Store.KeepMessages; {
	case keep < 0:
		ck.Errorf("store.keep_messages", "must not be negative (got %s; 0 keeps messages forever)", keep)
	case keep > 0 && keep < 24*time.Hour:
		// Replies and edits arrive hours later; a shorter span would
		// turn them into unknown-message fallbacks.
		ck.Errorf("store.keep_messages", "must be at least 24h (got %s): replies, edits and reactions to a message pruned sooner lose their link to it; 0 keeps messages forever", keep)
	}

	dl := ck.At("delivery")
	minOK := positive(dl, "retry_min", c.Delivery.RetryMin)
	maxOK := positive(dl, "retry_max", c.Delivery.RetryMax)
	if minOK && maxOK && c.Delivery.RetryMin > c.Delivery.RetryMax {
		dl.Errorf("retry_min", "%s is more than retry_max (%s)", c.Delivery.RetryMin, c.Delivery.RetryMax)
	}
	if c.Delivery.GiveUpAfter < 0 {
		dl.Errorf("give_up_after", "must not be negative (got %s; 0 retries forever)", c.Delivery.GiveUpAfter)
	}
	positive(dl, "send_timeout", c.Delivery.SendTimeout)

	ck.OneOf("relay.edits", c.Relay.Edits, "copy", "drop")
	ck.OneOf("relay.reactions", c.Relay.Reactions, "notice", "drop")
	ck.OneOf("relay.deletes", c.Relay.Deletes, "notice", "drop")

	names := make([]string, 0, len(c.Connectors))
	for name := range c.Connectors {
		names = append(names, name)
	}
	sort.Strings(names)
	if len(names) == 0 {
		ck.Errorf("connectors", "at least one connector is required")
	}
	for _, name := range names {
		cc := ck.At("connectors").At(name)
		if !connectorName.MatchString(name) {
			cc.Errorf("", "bad connector name %s: use lowercase letters, digits and dashes, starting with a letter or digit", quoted(name))
		}
		conn := c.Connectors[name]
		if conn == nil {
			cc.Errorf("type", "is required")
			continue
		}
		checkType(cc, conn.Type)
	}

	if c.Web.Listen != "" {
		ck.ListenAddr("web.listen", c.Web.Listen)
		if c.Web.Token != "" && len(c.Web.Token) < 16 {
			ck.Errorf("web.token", "is %d characters; use at least 16, or leave it empty to have one generated", len(c.Web.Token))
		}
	}
	if c.Metrics.Listen != "" {
		ck.ListenAddr("metrics.listen", c.Metrics.Listen)
	}
	if c.Media.PublicURL != "" {
		md := ck.At("media")
		if u, err := url.Parse(c.Media.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			md.Errorf("public_url", "%s is not an http(s) URL such as https://bridge.example.org/media", quoted(c.Media.PublicURL))
		}
		md.ListenAddr("listen", c.Media.Listen)
		md.Positive("max_bytes", c.Media.MaxBytes)
		positive(md, "expiry", c.Media.Expiry)
	}

	c.validateRoutes(ck, names)
	if c.Notices != (Notices{}) {
		nc := ck.At("notices")
		if nc.Required("connector", c.Notices.Connector) {
			if _, ok := c.Connectors[c.Notices.Connector]; !ok {
				nc.Errorf("connector", "unknown connector %s%s", quoted(c.Notices.Connector), suggestion(c.Notices.Connector, names))
			}
		}
		nc.Required("chat", c.Notices.Chat)
	}

	// Options last: they are the connectors' own business.
	for _, name := range names {
		conn := c.Connectors[name]
		if conn == nil {
			continue
		}
		if v, ok := conn.Options.(Validator); ok {
			v.Validate(ck.At("connectors").At(name))
		}
	}
}

func positive(ck *Checker, key string, d time.Duration) bool {
	if d <= 0 {
		ck.Errorf(key, "must be more than 0 (got %s)", d)
		return false
	}
	return true
}

// checkType checks a connector's type: given and registered.
func checkType(cc *Checker, typ string) {
	known := connectorTypeNames()
	list := "no connector types are registered"
	if len(known) > 0 {
		list = "known: " + strings.Join(known, ", ")
	}
	if strings.TrimSpace(typ) == "" {
		cc.Errorf("type", "is required (%s)", list)
		return
	}
	if _, ok := connectorType(typ); ok {
		return
	}
	hint := ""
	if best := closest(typ, known); best != "" {
		hint = "did you mean " + best + "?; "
	}
	cc.Errorf("type", "unknown connector type %s (%s%s)", quoted(typ), hint, list)
}

func (c *Config) validateRoutes(ck *Checker, connectors []string) {
	firstNamed := map[string]int{}
	for i, r := range c.Routes {
		rc := ck.At(fmt.Sprintf("routes[%d]", i))
		if rc.Required("name", r.Name) {
			if first, dup := firstNamed[r.Name]; dup {
				rc.Errorf("name", "duplicate route name %s (also routes[%d])", quoted(r.Name), first)
			} else {
				firstNamed[r.Name] = i
			}
		}
		if len(r.Endpoints) < 2 {
			rc.Errorf("endpoints", "a route needs at least 2 endpoints (got %d)", len(r.Endpoints))
		}
		seen := map[[2]string]int{}
		directionsOK := true
		sends, receives := false, false
		for j, ep := range r.Endpoints {
			ec := rc.At(fmt.Sprintf("endpoints[%d]", j))
			if ec.Required("connector", ep.Connector) {
				if _, ok := c.Connectors[ep.Connector]; !ok {
					// Finding the closest name costs: not for a problem
					// that will not be listed.
					hint := ""
					if !ec.full() {
						hint = suggestion(ep.Connector, connectors)
					}
					ec.Errorf("connector", "unknown connector %s%s", quoted(ep.Connector), hint)
				}
			}
			switch {
			case ep.Chat != "" && ep.Chats != "":
				ec.Errorf("chats", "give chat (one chat) or chats: all (every chat), not both")
			case ep.Chats != "":
				ec.OneOf("chats", ep.Chats, AllChats)
			default:
				ec.Required("chat", ep.Chat)
			}
			if ep.Direction != "" && !ec.OneOf("direction", string(ep.Direction), string(Both), string(In), string(Out)) {
				directionsOK = false
			}
			sends = sends || ep.Direction.Sends()
			receives = receives || ep.Direction.Receives()
			chat := ep.Chat
			if ep.Chats != "" {
				chat = "*" + ep.Chats
			}
			if ep.Connector == "" || chat == "" {
				continue
			}
			k := [2]string{ep.Connector, chat}
			if first, dup := seen[k]; dup {
				ec.Errorf("", "connector %s chat %s is already in this route (endpoints[%d])", quoted(ep.Connector), quoted(ep.Chat), first)
			} else {
				seen[k] = j
			}
		}
		if len(r.Endpoints) < 2 || !directionsOK {
			continue
		}
		if !sends {
			rc.Errorf("endpoints", "no endpoint sends into the route: every one is direction: out")
		}
		if !receives {
			rc.Errorf("endpoints", "no endpoint receives from the route: every one is direction: in")
		}
	}
}
