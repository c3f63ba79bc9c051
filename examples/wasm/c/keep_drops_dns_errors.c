/* Keep only what needs attention: dropped flows and DNS answers with an
 * error (the C twin of keep-drops-dns-errors). */
#include "porin_flow.h"

static int keep(const porin_flow *f) {
    if (porin_l7(f) == PORIN_L7_DNS)
        return porin_dns_rcode(f) != 0;
    return porin_verdict(f) == PORIN_VERDICT_DROPPED;
}

PORIN_FILTER(keep)
