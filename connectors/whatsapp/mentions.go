package whatsapp

import (
	"cmp"
	"context"
	"html"
	"sort"
	"strings"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

// mentionedJIDs are the people a message @-mentions. WhatsApp writes a
// mention in the text as "@" and the person's number (or LID), which means
// nothing on other platforms, so the connector shows their name instead.
func mentionedJIDs(evt *events.Message) []types.JID {
	msg := unwrapMessage(evt.Message)
	if msg == nil {
		return nil
	}
	var ci *waE2E.ContextInfo
	for _, sub := range []withContext{
		msg.GetExtendedTextMessage(), msg.GetImageMessage(), msg.GetVideoMessage(),
		msg.GetDocumentMessage(), msg.GetAudioMessage(), msg.GetStickerMessage(),
	} {
		if c := sub.GetContextInfo(); c != nil {
			ci = c
			break
		}
	}
	var out []types.JID
	for _, s := range ci.GetMentionedJID() {
		if j, err := types.ParseJID(s); err == nil && j.User != "" {
			out = append(out, j.ToNonAD())
		}
	}
	return out
}

// nameMentions rewrites "@number" in ev's text (and HTML) as "@Name" and
// says whom each names (ev.Mentions), so destinations can link them.
func (c *Connector) nameMentions(ctx context.Context, ev *bridge.Event, jids []types.JID) {
	if len(jids) == 0 {
		return
	}
	names := map[string]string{}
	_, dev := c.current()
	for _, j := range jids {
		if !mentionsUser(ev.Text, j.User) {
			continue // not in the text: nothing to link
		}
		own := isOwn(dev, j.String())
		name := c.chats.senderName(ctx, j, "", false)
		if own {
			// The owner is in no one's contacts: the account's own name.
			name = cmp.Or(c.LinkStatus().Account.Name, name)
		}
		m := bridge.Mention{Name: name, Text: "@" + j.User}
		if name != "" && name != displayNumber(j) {
			names[j.User] = name
			m.Text = "@" + name
		}
		if own {
			m.Owner = true
		} else {
			m.ID = c.canonicalJID(ctx, j).String()
		}
		ev.Mentions = append(ev.Mentions, m)
	}
	ev.Text = replaceMentions(ev.Text, names, false)
	ev.HTML = replaceMentions(ev.HTML, names, true)
}

// replaceMentions replaces "@user" by "@name" for each user in names, where
// the user is not the start of a longer number.
func replaceMentions(text string, names map[string]string, escape bool) string {
	if text == "" || len(names) == 0 || !strings.Contains(text, "@") {
		return text
	}
	users := make([]string, 0, len(names))
	for u := range names {
		users = append(users, u)
	}
	// Longest first, so "@1555123" is not taken for a mention of "@1555".
	sort.Slice(users, func(i, j int) bool { return len(users[i]) > len(users[j]) })
	var b strings.Builder
	for i := 0; i < len(text); {
		if text[i] == '@' {
			if u, ok := mentionAt(text[i+1:], users); ok {
				name := names[u]
				if escape {
					name = html.EscapeString(name)
				}
				b.WriteString("@" + name)
				i += 1 + len(u)
				continue
			}
		}
		b.WriteByte(text[i])
		i++
	}
	return b.String()
}

func mentionAt(rest string, users []string) (string, bool) {
	for _, u := range users {
		if strings.HasPrefix(rest, u) && (len(rest) == len(u) || !isDigit(rest[len(u)])) {
			return u, true
		}
	}
	return "", false
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// mentionsUser reports whether text has "@user", not as the start of a
// longer number.
func mentionsUser(text, user string) bool {
	for i := 0; ; {
		k := strings.Index(text[i:], "@"+user)
		if k < 0 {
			return false
		}
		end := i + k + 1 + len(user)
		if end == len(text) || !isDigit(text[end]) {
			return true
		}
		i = end
	}
}
