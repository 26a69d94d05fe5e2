package fakewa

import (
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waVnameCert"
	"google.golang.org/protobuf/proto"
)

// verifiedName is the <verified_name> a business's messages carry: the
// certificate of its verified name (unsigned: whatsmeow reads the name
// without checking it). ok is false for a phone that is no business.
func (p *Phone) verifiedName() (waBinary.Node, bool) {
	if p.BusinessName == "" {
		return waBinary.Node{}, false
	}
	details, err := proto.Marshal(&waVnameCert.VerifiedNameCertificate_Details{
		Serial: proto.Uint64(1), Issuer: proto.String("smb:wa"), VerifiedName: proto.String(p.BusinessName),
	})
	if err != nil {
		panic(err) // a fixed message always marshals
	}
	cert, err := proto.Marshal(&waVnameCert.VerifiedNameCertificate{Details: details})
	if err != nil {
		panic(err)
	}
	return waBinary.Node{Tag: "verified_name", Attrs: waBinary.Attrs{"serial": "1"}, Content: cert}, true
}
