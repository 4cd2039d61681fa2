/* Values under limits->skip_keys (e.g. the optimizer state of a rank file) are read without
 * being built: operands are checked and skipped, the stack moves as it would. */
#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mcorefs/pickle.h"
#include "mcorefs/error.h"
#include "bigmem.h"
#include "pickle_vm.h"

/* ---- skipped values (limits->skip_keys) ---- */

/* v is about to be pushed at index sp: is it one of the keys, in key position of a dict being
 * filled (by SETITEMS after a MARK, or by a single SETITEM)? */
int vm_is_skip_key(const vm *m, const mf_pv *v)
{
    size_t k = m->sp, f = vm_floor(m);
    int key_pos = (m->nmarks && f >= 1 && (k - f) % 2 == 0 && m->stack[f - 1]->kind == MF_PV_DICT) ||
                  (k >= 1 && k - 1 >= f && m->stack[k - 1]->kind == MF_PV_DICT);
    if (!key_pos)
        return 0;
    for (const char *const *s = m->skip_keys; *s; s++)
        if (strcmp(*s, v->u.str.s) == 0)
            return 1;
    return 0;
}

/* How an opcode that builds or consumes values moves the stack while a value is skipped. */
enum { FX_PUSH, FX_POP_PUSH, FX_POP, FX_COLLECT, FX_MARKPOP, FX_MEMO_GET, FX_OTHER };
typedef struct {
    uint8_t fx, pops;
    uint8_t operand;  /* 0, or fixed size 1/2/4/8; LEN|n: an n-byte length, then data; LINES: GLOBAL */
} op_shape;
#define LEN 0x10
#define LINES 0x20

static op_shape shape_of(uint8_t op)
{
    switch (op) {
    case 'N': case 0x88: case 0x89: case ')': case ']': case '}': case 0x8f:
        return (op_shape){FX_PUSH, 0, 0};
    case 'K': return (op_shape){FX_PUSH, 0, 1};
    case 'M': return (op_shape){FX_PUSH, 0, 2};
    case 'J': return (op_shape){FX_PUSH, 0, 4};
    case 'G': return (op_shape){FX_PUSH, 0, 8};
    case 0x8a: case 0x8c: case 'U': case 'C': return (op_shape){FX_PUSH, 0, LEN | 1};
    case 0x8b: case 'X': case 'T': case 'B': return (op_shape){FX_PUSH, 0, LEN | 4};
    case 0x8d: case 0x8e: case 0x96: return (op_shape){FX_PUSH, 0, LEN | 8};
    case 'c': return (op_shape){FX_PUSH, 0, LINES};
    case 0x85: case 'Q': return (op_shape){FX_POP_PUSH, 1, 0};
    case 0x86: case 0x93: case 'R': case 0x81: return (op_shape){FX_POP_PUSH, 2, 0};
    case 0x87: case 0x92: return (op_shape){FX_POP_PUSH, 3, 0};
    case 'a': case 'b': return (op_shape){FX_POP, 1, 0};
    case 's': return (op_shape){FX_POP, 2, 0};
    case 't': case 'l': case 'd': case 0x91: return (op_shape){FX_COLLECT, 0, 0};
    case 'e': case 'u': case 0x90: return (op_shape){FX_MARKPOP, 0, 0};
    case 'h': return (op_shape){FX_MEMO_GET, 0, 1};
    case 'j': return (op_shape){FX_MEMO_GET, 0, 4};
    default: return (op_shape){FX_OTHER, 0, 0}; /* builds nothing: run it as usual */
    }
}

static int skip_operand(vm *m, uint8_t operand)
{
    int rc;
    if (operand == LINES) {
        for (int i = 0; i < 2; i++) {
            const uint8_t *p = m->buf + m->pos, *nl = vm_line_end(m);
            if (!nl)
                return m->fill_rc ? m->fill_rc : vm_fail(m, MF_ERR_FORMAT, "GLOBAL line without newline");
            m->pos += (size_t)(nl - p) + 1;
        }
        return 0;
    }
    unsigned n = operand & 0x0f;
    if ((rc = vm_need(m, n)))
        return rc;
    uint64_t x = vm_rd_le(m, n);
    if (!(operand & LEN))
        return 0;
    if ((rc = vm_need(m, x)))
        return rc;
    m->pos += (size_t)x;
    return 0;
}

/* Back to where the key after the skipped value started, without the skipped pair: memo ids
 * handed out since then were only given to skipped values, so they are handed out again. */
static int skip_rewind(vm *m)
{
    /* A batch of many skipped pairs would be re-read once per pair: bound the extra work. */
    m->reread += m->pos - m->skip_next;
    if (m->reread > 4 * (uint64_t)m->total + ((uint64_t)1 << 20))
        return vm_fail(m, MF_ERR_LIMIT, "too many skipped dict entries in one batch");
    for (size_t i = m->skip_next_memo; i < m->memo_hi; i++)
        if (m->memo[i] == m->skipped)
            m->memo[i] = NULL;
    m->memo_skip_hi = m->skip_next_memo > m->memo_hi ? m->skip_next_memo : 0;
    m->memo_count = m->skip_next_memo;
    m->pos = m->skip_next;
    m->sp = m->skip_at;
    m->skip_at = 0;
    if (m->pos < m->released) { /* handed back while skimming: read again (only with m->fill) */
        int rc = m->fill ? m->fill(m->fill_ctx, (uint8_t *)(uintptr_t)m->buf + m->pos, m->pos, m->released - m->pos)
                         : vm_fail(m, MF_ERR_INVALID, "rewind into released input");
        if (rc)
            return m->fill_rc = rc;
        m->released = m->pos;
    }
    return 0;
}

/* One opcode while a skipped value is read: operands are checked and skipped, the stack moves
 * as it would, but every value pushed is m->skipped. The mode ends with the opcode that
 * consumes the key, a SETITEM(S): the skipped pair is dropped; pairs after it in the same batch
 * were only skimmed, so reading goes back to the first of them (m->skip_next) and builds them. */
int vm_skip_step(vm *m, int *done, mf_pv **result)
{
    uint8_t op = m->buf[m->pos];
    op_shape s = shape_of(op);
    size_t key = m->skip_at, f = vm_floor(m);
    int marked = s.fx == FX_COLLECT || s.fx == FX_MARKPOP || op == '1' || (op == '0' && m->sp <= f);
    size_t pops = op == '0' ? 1 : s.pops; /* POP above the mark pops one item */
    int popping = s.fx == FX_POP || s.fx == FX_POP_PUSH || op == '0';
    int reaches = op == '.' || (marked ? m->nmarks && f <= key : popping && m->sp - f >= pops && m->sp - pops <= key);
    if (reaches) {
        if (op == 'u' && m->nmarks && (key - f) % 2 == 0) {
            if (m->sp > key + 2 && m->skip_next)
                return skip_rewind(m);
            m->sp = key;
        } else if (op == 's' && m->sp == key + 2) {
            m->sp = key;
            m->skip_at = 0;
            m->pos++;
            return 0;
        }
        m->skip_at = 0;
        return vm_step(m, done, result);
    }
    /* The first opcode that puts something at key + 2 once the value is done starts the next key.
     * Not under a MARK opened after the key: that is inside the value, or inside the next key
     * (whose start was already taken at its MARK); neither is where the rewind must go, and a
     * start left there would also keep release_input from handing back the value's bytes. */
    if (m->sp == key + 2 && f <= key && (s.fx == FX_PUSH || s.fx == FX_MEMO_GET || op == '(' || op == '2')) {
        m->skip_next = m->pos;
        m->skip_next_memo = m->memo_count;
    }
    if (op == 0x94 && m->sp > key + 1 && m->sp > f && m->memo_count >= m->memo_hi && m->memo_count >= m->memo_skip_hi &&
        m->memo_count < MAX_MEMO_ID) { /* MEMOIZE of a skipped value (above the key): counted, not stored */
        m->memo_skip_hi = ++m->memo_count;
        m->pos++;
        return 0;
    }
    if (s.fx == FX_OTHER)
        return vm_step(m, done, result);
    m->op_pos = m->pos;
    m->op = op;
    m->pos++;
    int rc;
    if (s.fx == FX_MEMO_GET) { /* same check as memo_get, but the value is not used */
        if ((rc = vm_need(m, s.operand)))
            return rc;
        uint64_t id = vm_rd_le(m, s.operand);
        if (!vm_memo_at(m, id))
            return vm_fail(m, MF_ERR_FORMAT, "memo id %llu not defined", (unsigned long long)id);
        return vm_push(m, m->skipped);
    }
    if ((rc = skip_operand(m, s.operand)))
        return rc;
    size_t start = m->sp;
    switch (s.fx) {
    case FX_POP:
    case FX_POP_PUSH:
        if (m->sp < f + s.pops)
            return vm_fail(m, MF_ERR_FORMAT, "stack underflow");
        m->sp -= s.pops;
        break;
    case FX_COLLECT:
    case FX_MARKPOP:
        if ((rc = vm_pop_mark(m, &start)))
            return rc;
        if (s.fx == FX_MARKPOP && start <= vm_floor(m))
            return vm_fail(m, MF_ERR_FORMAT, "SETITEMS/APPENDS without a target");
        m->sp = start;
        break;
    default:
        break;
    }
    return s.fx == FX_POP || s.fx == FX_MARKPOP ? 0 : vm_push(m, m->skipped);
}
