import glob, sys, onnx, time, random
sys.path.insert(0,'/work/main')
from tests.oracle import check_group
from onnxprune.analysis import analyze, AnalysisOptions
from onnxprune.runtime import random_inputs
for p in sorted(glob.glob('/work/unseen/*.onnx')):
    t=time.time()
    m = onnx.load(p)
    shapes = {i.name: [1,16] for i in m.graph.input if i.name in ('input_ids','attention_mask','token_type_ids')}
    a = analyze(m, AnalysisOptions(input_shapes=shapes))
    feeds = random_inputs(m, shapes, batch=1)
    for k in feeds:
        if k in ('input_ids','token_type_ids'): feeds[k] = feeds[k] % 4
        if k=='attention_mask': feeds[k][:] = 1
    gs = [g for g in a.prunable if not g.inexact]
    random.Random(0).shuffle(gs)
    ok=fail=0
    for g in gs[:6]:
        try: check_group(a, g, feeds, rtol=1e-4); ok+=1
        except Exception as e: fail+=1; print("   FAIL", g.id, g.name, g.kind, str(e)[:200])
    print(f"{p.split('/')[-1]:45s} ok={ok} fail={fail} {time.time()-t:.1f}s", flush=True)
