package matrix

import (
	"html"
	"regexp"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// Mentions. Matrix clients name a person with a pill: a link to the user
// in the HTML, and the user in m.mentions. Inbound, each pill whose words
// are in the text becomes a bridge.Mention; the connector then says who
// it is on the other platforms (the owner; a ghost's origin sender).
// Outbound, each mention the destination can point at becomes a pill.

// pillLink finds pills: links to a user by matrix.to or matrix: URI.
var pillLink = regexp.MustCompile(`<a\s+href="((?:https://matrix\.to/#/|matrix:u/)[^"]+)"[^>]*>([^<]*)</a>`)

// pillsOf are the pills of formatted whose words are in text, each with
// the Matrix user in ID.
func pillsOf(formatted, text string) []bridge.Mention {
	var out []bridge.Mention
	for _, m := range pillLink.FindAllStringSubmatch(formatted, -1) {
		uri, err := id.ParseMatrixURIOrMatrixToURL(html.UnescapeString(m[1]))
		if err != nil || uri.Sigil1 != '@' {
			continue
		}
		user := id.UserID("@" + uri.MXID1)
		words := strings.TrimSpace(html.UnescapeString(m[2]))
		if _, _, err := user.Parse(); err != nil || words == "" || !strings.Contains(text, words) {
			continue
		}
		out = append(out, bridge.Mention{ID: string(user), Name: strings.TrimPrefix(words, "@"), Text: words})
	}
	return out
}

// resolveMentions says who each pill of ev names beyond Matrix: the
// owner is the owner on every platform, and a ghost is the origin sender
// it speaks for; other Matrix users stay who they are.
func (b *asBridge) resolveMentions(ev *bridge.Event) {
	for i := range ev.Mentions {
		m := &ev.Mentions[i]
		user := id.UserID(m.ID)
		switch {
		case b.opts.Owner != "" && user == id.UserID(b.opts.Owner):
			m.ID, m.Owner = "", true
		case b.isGhost(user):
			if sender, ok := ghostSender(b.opts.GhostPrefix, user.Localpart()); ok {
				m.ID = sender
			}
		}
	}
}

// pillFor is the Matrix user a mention points at in appservice mode: the
// owner, a Matrix user, or the ghost of another platform's person.
func (b *asBridge) pillFor(m bridge.Mention) id.UserID {
	switch {
	case m.Owner:
		return id.UserID(b.opts.Owner)
	case strings.HasPrefix(m.ID, "@") && strings.Contains(m.ID, ":"):
		return id.UserID(m.ID)
	case m.ID != "":
		return b.ghostID(m.ID)
	}
	return ""
}

// matrixUser is the pill target of a mention in bot mode, which has no
// ghosts: only Matrix users.
func matrixUser(m bridge.Mention) id.UserID {
	if strings.HasPrefix(m.ID, "@") && strings.Contains(m.ID, ":") {
		return id.UserID(m.ID)
	}
	return ""
}

// withPills turns the words of each mention that resolves to a Matrix
// user into a pill to that user, and names the users in m.mentions.
func withPills(content *event.MessageEventContent, mentions []bridge.Mention, resolve func(bridge.Mention) id.UserID) {
	if resolve == nil {
		return
	}
	for _, m := range mentions {
		user := resolve(m)
		if user == "" || m.Text == "" || !strings.Contains(content.Body, m.Text) {
			continue
		}
		if content.FormattedBody == "" {
			content.Format, content.FormattedBody = event.FormatHTML, event.TextToHTML(content.Body)
		}
		words := html.EscapeString(m.Text)
		if !strings.Contains(content.FormattedBody, words) {
			continue
		}
		pill := `<a href="` + html.EscapeString(user.URI().MatrixToURL()) + `">` + words + `</a>`
		content.FormattedBody = strings.Replace(content.FormattedBody, words, pill, 1)
		if content.Mentions == nil {
			content.Mentions = &event.Mentions{}
		}
		if !content.Mentions.Has(user) {
			content.Mentions.Add(user)
		}
	}
}
