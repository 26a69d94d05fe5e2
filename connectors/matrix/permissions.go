package matrix

import (
	"strings"

	"maunium.net/go/mautrix/id"
)

// allowed reports whether u's messages in portals are relayed: the owner
// always; others when options.allow names them (@user:server, exactly)
// or their server (example.org). The bridge's own users never are, even
// on an allowed server: relaying them would echo the bridge to itself.
func (b *asBridge) allowed(u id.UserID) bool {
	if b.isBridgeUser(u) {
		return false
	}
	return allowedBy(b.opts.Owner, b.opts.Allow, u)
}

// isBridgeUser reports whether u is the bot or a ghost.
func (b *asBridge) isBridgeUser(u id.UserID) bool {
	return u == b.bot || b.isGhost(u)
}

func allowedBy(owner string, allow []string, u id.UserID) bool {
	_, server, err := u.Parse()
	if err != nil || server == "" {
		return false
	}
	if string(u) == owner {
		return true
	}
	for _, a := range allow {
		if strings.HasPrefix(a, "@") {
			if string(u) == a {
				return true
			}
		} else if strings.EqualFold(server, a) { // DNS names ignore case
			return true
		}
	}
	return false
}
