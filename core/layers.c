/* Which global decoder layers a model chunk (pp rank, virtual stage) holds (mcore-format.md §5.6). */
#include "mcorefs/checkpoint.h"
#include "mcorefs/error.h"

static int uneven(const mf_model *m, int64_t pp, int64_t vp, int64_t *off, int64_t *cnt)
{
    int64_t P = m->pp, V = m->vpp, L = m->num_layers, F = m->pp_first, La = m->pp_last;
    int64_t mid_stages = P - (F > 0) - (La > 0), mid_layers = L - F - La;
    int64_t mid_rank = pp - (F > 0);
    if (mid_stages < 0 || mid_layers < 0 || (mid_stages > 0 && mid_layers % (mid_stages * V) != 0) ||
        (mid_stages == 0 && mid_layers != 0) || F % V != 0 || La % V != 0)
        return mf_fail(MF_ERR_INCONSISTENT, "uneven pipeline split impossible: %lld layers, first=%lld last=%lld, pp=%lld vpp=%lld",
                       (long long)L, (long long)F, (long long)La, (long long)P, (long long)V);
    int64_t cF = F / V, cLa = La / V, cMid = mid_layers / V;
    int64_t per = mid_stages > 0 ? cMid / mid_stages : 0;
    int64_t total = cF + cMid + cLa;
    if (pp == 0 && F > 0) {
        *off = vp * total;
        *cnt = cF;
    } else if (pp == P - 1 && La > 0) {
        *off = vp * total + cF + cMid;
        *cnt = cLa;
    } else {
        *off = vp * total + cF + mid_rank * per;
        *cnt = per;
    }
    return MF_OK;
}

int mf_layer_offset(const mf_model *m, int64_t pp, int64_t vp, int64_t *off, int64_t *cnt)
{
    int64_t P = m->pp, V = m->vpp, L = m->num_layers;
    if (m->pp_first > 0 || m->pp_last > 0)
        return uneven(m, pp, vp, off, cnt);
    int64_t Ln = L + m->account_embedding + m->account_loss;
    if (Ln % (P * V) != 0)
        return mf_fail(MF_ERR_INCONSISTENT, "%lld layers cannot be split evenly over pp=%lld x vpp=%lld",
                       (long long)Ln, (long long)P, (long long)V);
    int64_t per_chunk = Ln / (P * V);
    *off = vp * (Ln / V) + pp * per_chunk;
    *cnt = per_chunk;
    if (m->account_embedding) {
        if (pp == 0 && vp == 0)
            *cnt -= 1;
        else
            *off -= 1;
    }
    if (m->account_loss && pp == P - 1 && vp == V - 1)
        *cnt -= 1;
    return MF_OK;
}
