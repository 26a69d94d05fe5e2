package whatsapp

import (
	"strings"

	"go.mau.fi/whatsmeow/proto/waE2E"
)

// vcard is what a shared contact card says that people read: a name and
// phone numbers.
type vcard struct {
	Name   string
	Phones []string
}

// parseVCard reads the name (FN, else N) and phone numbers (TEL) of a
// vCard. It is lenient: WhatsApp's cards are vCard 3.0 with grouped
// properties ("item1.TEL;waid=…:+1 555…"), and phones write them loosely.
func parseVCard(s string) vcard {
	// Unfold continuation lines (a line starting with a space or tab).
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\n ", "")
	s = strings.ReplaceAll(s, "\n\t", "")
	var v vcard
	var structured string
	for _, line := range strings.Split(s, "\n") {
		colon := strings.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		nameAndParams, value := line[:colon], strings.TrimSpace(line[colon+1:])
		params := strings.Split(nameAndParams, ";")
		prop := strings.ToUpper(strings.TrimSpace(params[0]))
		if dot := strings.LastIndexByte(prop, '.'); dot >= 0 {
			prop = prop[dot+1:] // drop the group ("item1.")
		}
		switch prop {
		case "FN":
			if v.Name == "" {
				v.Name = vcardUnescape(value)
			}
		case "N":
			structured = value
		case "TEL":
			phone := vcardUnescape(value)
			if phone == "" {
				// WhatsApp's own cards name the account in waid=.
				for _, p := range params[1:] {
					if k, val, ok := strings.Cut(p, "="); ok && strings.EqualFold(strings.TrimSpace(k), "waid") && val != "" {
						phone = "+" + strings.TrimSpace(val)
					}
				}
			}
			if phone != "" {
				v.Phones = append(v.Phones, phone)
			}
		}
	}
	if v.Name == "" && structured != "" {
		// N is family;given;additional;prefix;suffix; a component may
		// hold an escaped "\;".
		parts := splitUnescaped(structured, ';')
		var words []string
		for _, i := range []int{3, 1, 2, 0, 4} {
			if i < len(parts) {
				if w := vcardUnescape(parts[i]); w != "" {
					words = append(words, w)
				}
			}
		}
		v.Name = strings.Join(words, " ")
	}
	return v
}

// splitUnescaped splits s at each sep that no backslash escapes.
func splitUnescaped(s string, sep byte) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // the escaped byte is part of the component
		case sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

var vcardUnescaper = strings.NewReplacer(`\n`, " ", `\N`, " ", `\,`, ",", `\;`, ";", `\:`, ":", `\\`, `\`)

func vcardUnescape(s string) string { return strings.TrimSpace(vcardUnescaper.Replace(s)) }

// contactName is the name to show for a shared contact.
func contactName(c *waE2E.ContactMessage, card vcard) string {
	for _, n := range []string{c.GetDisplayName(), card.Name} {
		if n = strings.TrimSpace(n); n != "" {
			return n
		}
	}
	return "Unnamed contact"
}

// contactText shows one shared contact: its name, then its numbers.
func contactText(c *waE2E.ContactMessage) string {
	card := parseVCard(c.GetVcard())
	text := "👤 Contact: " + contactName(c, card)
	for _, p := range card.Phones {
		text += "\n" + p
	}
	return text
}

// contactsText shows several shared contacts, one line each.
func contactsText(a *waE2E.ContactsArrayMessage) string {
	var b strings.Builder
	b.WriteString("👤 Contacts:")
	for _, c := range a.GetContacts() {
		card := parseVCard(c.GetVcard())
		b.WriteString("\n" + contactName(c, card))
		if len(card.Phones) > 0 {
			b.WriteString(": " + strings.Join(card.Phones, ", "))
		}
	}
	return b.String()
}
