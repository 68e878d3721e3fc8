package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/octohelm/crpe/internal/sigverify"
)

// verifyFlags are --verify-key and --verify-policy: the signatures an
// import requires (the agent, crpe import --data and --to-registry).
type verifyFlags struct {
	keys       []string
	policyFile string
}

func (v *verifyFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&v.keys, "verify-key", nil, "a cosign public key (PEM) every image must carry a signature of, checked offline before anything is published (repeatable: any one of them)")
	f.StringVar(&v.policyFile, "verify-policy", "", "a policy file: which keys for which repositories, required or optional (docs/signatures.md)")
}

// policy is the policy the flags say, or nil for none.
func (v *verifyFlags) policy() (*sigverify.Policy, error) {
	switch {
	case len(v.keys) > 0 && v.policyFile != "":
		return nil, errors.New("give --verify-key or --verify-policy, not both")
	case v.policyFile != "":
		return sigverify.LoadPolicy(v.policyFile)
	case len(v.keys) > 0:
		var keys []*sigverify.Key
		for _, f := range v.keys {
			k, err := sigverify.LoadKey(f)
			if err != nil {
				return nil, err
			}
			keys = append(keys, k)
		}
		return sigverify.KeysPolicy(keys), nil
	}
	return nil, nil
}
