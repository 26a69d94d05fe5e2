package whatsapp

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"google.golang.org/protobuf/proto"
)

// bobCard is a contact card as the WhatsApp app writes it.
const bobCard = "BEGIN:VCARD\nVERSION:3.0\nN:Builder;Bob;;;\nFN:Bob Builder\n" +
	"item1.TEL;waid=15550002222:+1 555-000-2222\nitem1.X-ABLabel:Mobile\n" +
	"item2.TEL;type=WORK:+1 555 999\nEND:VCARD"

func TestParseVCard(t *testing.T) {
	tests := []struct {
		name string
		card string
		want vcard
	}{
		{"WhatsApp card", bobCard, vcard{Name: "Bob Builder", Phones: []string{"+1 555-000-2222", "+1 555 999"}}},
		{"CRLF and folded lines", "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Very Long\r\n  Name\r\nTEL;TYPE=CELL:+44\r\n\t20 7946 0000\r\nEND:VCARD\r\n",
			vcard{Name: "Very Long Name", Phones: []string{"+4420 7946 0000"}}},
		{"name from N", "BEGIN:VCARD\nN:Doe;John;Quincy;Dr.;Jr.\nEND:VCARD", vcard{Name: "Dr. John Quincy Doe Jr."}},
		{"N with only a family name", "N:Doe;;;;", vcard{Name: "Doe"}},
		{"FN wins over N", "N:Doe;John\nFN:Johnny", vcard{Name: "Johnny"}},
		{"first FN wins", "FN:One\nFN:Two", vcard{Name: "One"}},
		{"escapes", `FN:Smith\, Anna\; PhD\nBerlin \\ DE`, vcard{Name: `Smith, Anna; PhD Berlin \ DE`}},
		{"escaped semicolon in N", `N:O\;Brien;Conan;;;`, vcard{Name: "Conan O;Brien"}},
		{"lower-case properties", "fn:ann\ntel:123", vcard{Name: "ann", Phones: []string{"123"}}},
		{"phone only in waid", "FN:W\nTEL;type=CELL;waid=4915112345678:", vcard{Name: "W", Phones: []string{"+4915112345678"}}},
		{"empty phone without waid", "FN:E\nTEL;type=CELL:  ", vcard{Name: "E"}},
		{"lines without a colon", "BEGIN VCARD\nFN:X\ngarbage", vcard{Name: "X"}},
		{"empty", "", vcard{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseVCard(tt.card); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseVCard(%q) = %+v; want %+v", tt.card, got, tt.want)
			}
		})
	}
}

func TestConvertIncomingContact(t *testing.T) {
	tests := []struct {
		name string
		msg  *waE2E.Message
		text string
	}{
		{
			name: "one contact",
			msg:  &waE2E.Message{ContactMessage: &waE2E.ContactMessage{DisplayName: proto.String("Bob"), Vcard: proto.String(bobCard)}},
			text: "👤 Contact: Bob\n+1 555-000-2222\n+1 555 999",
		},
		{
			name: "name from the card",
			msg:  &waE2E.Message{ContactMessage: &waE2E.ContactMessage{Vcard: proto.String(bobCard)}},
			text: "👤 Contact: Bob Builder\n+1 555-000-2222\n+1 555 999",
		},
		{
			name: "no name, no card",
			msg:  &waE2E.Message{ContactMessage: &waE2E.ContactMessage{DisplayName: proto.String("  ")}},
			text: "👤 Contact: Unnamed contact",
		},
		{
			name: "several contacts",
			msg: &waE2E.Message{ContactsArrayMessage: &waE2E.ContactsArrayMessage{
				DisplayName: proto.String("3 contacts"),
				Contacts: []*waE2E.ContactMessage{
					{DisplayName: proto.String("Bob"), Vcard: proto.String(bobCard)},
					{Vcard: proto.String("BEGIN:VCARD\nN:Doe;Jane;;;\nTEL:+33 1 23\nEND:VCARD")},
					{DisplayName: proto.String("Nobody")},
				},
			}},
			text: "👤 Contacts:\nBob: +1 555-000-2222, +1 555 999\nJane Doe: +33 1 23\nNobody",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := infoDM(aliceJID, "3EB0CARD")
			want := neutralEvent(info, "Alice")
			want.Text = tt.text
			checkIncoming(t, dispatched(info, tt.msg), "Alice", want, msgRefOf(info, tt.text))
		})
	}
}

// vcardEscape writes s as a vCard 3.0 text value.
var vcardEscape = strings.NewReplacer(`\`, `\\`, ",", `\,`, ";", `\;`, "\n", `\n`)

func FuzzParseVCard(f *testing.F) {
	f.Add(bobCard, "Bob")
	f.Add("BEGIN:VCARD\r\nFN:a\r\n b\r\nEND:VCARD", `a\b`)
	f.Add(`N:\;;\\;\`, "x;y,z")
	f.Add("TEL;waid=:\nTEL;waid=1=2:", " spaced ")
	f.Add("item1.item2.FN:\xff\nTEL:\xfe", "\xff")
	f.Add(":\n;:\n.:", "")
	f.Fuzz(func(t *testing.T, card, name string) {
		v := parseVCard(card)
		for _, s := range append([]string{v.Name}, v.Phones...) {
			if s != strings.TrimSpace(s) || strings.Contains(s, "\n") {
				t.Fatalf("parseVCard(%q) = %+v: a value is untrimmed or spans lines", card, v)
			}
			if utf8.ValidString(card) && !utf8.ValidString(s) {
				t.Fatalf("parseVCard(%q) = %+v: invalid UTF-8 from valid input", card, v)
			}
		}
		for _, p := range v.Phones {
			if p == "" {
				t.Fatalf("parseVCard(%q) = %+v: an empty phone", card, v)
			}
		}

		// A name written as a vCard reads back as itself: as FN, or as
		// the given name of N.
		if strings.ContainsAny(name, "\r\n") {
			return
		}
		want := strings.TrimSpace(name)
		if got := parseVCard("BEGIN:VCARD\nFN:" + vcardEscape.Replace(name) + "\nEND:VCARD").Name; got != want {
			t.Fatalf("FN %q read back as %q; want %q", name, got, want)
		}
		if got := parseVCard("BEGIN:VCARD\nN:;" + vcardEscape.Replace(name) + ";;;\nEND:VCARD").Name; got != want {
			t.Fatalf("N given name %q read back as %q; want %q", name, got, want)
		}
	})
}
