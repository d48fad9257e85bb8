/**
 * A binary min-heap of (time, id) pairs: the scheduler looks only at the policies whose next check
 * time has come, so a tick costs O(due · log n) instead of O(n). Entries are never updated in
 * place: a newer entry for the same id supersedes older ones, which the owner recognises by its
 * generation number and skips when they surface.
 */
export interface DueItem {
  at: number;
  id: string;
  gen: number;
}

export class DueHeap {
  private items: DueItem[] = [];

  get size(): number {
    return this.items.length;
  }

  push(item: DueItem): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = a[parent];
      if (!p || p.at <= item.at) break;
      a[i] = p;
      i = parent;
    }
    a[i] = item;
  }

  peek(): DueItem | undefined {
    return this.items[0];
  }

  pop(): DueItem | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (top === undefined || last === undefined || a.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let min = i;
      let minAt = last.at;
      const li = a[l];
      const ri = a[r];
      if (li && li.at < minAt) {
        min = l;
        minAt = li.at;
      }
      if (ri && ri.at < minAt) min = r;
      if (min === i) break;
      a[i] = a[min] as DueItem;
      i = min;
    }
    a[i] = last;
    return top;
  }

  /** Keep only the items `keep` accepts (drops superseded entries when they pile up). */
  rebuild(keep: (item: DueItem) => boolean): void {
    const old = this.items;
    this.items = [];
    for (const item of old) if (keep(item)) this.push(item);
  }
}
