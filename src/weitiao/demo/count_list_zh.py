"""生成条数: the demo task in Chinese, as the source document gives it ("请列出5种水果。" -> "1. 苹果" ...).

The same task as `count_list` (exactly N numbered items of a category, nothing else), with Chinese categories,
members and phrasings. The answer is written "1. 苹果" one item a line, the format `count_list` and `list_correct`
score; they also accept the Chinese list styles a model may write ("1、苹果", "（1）苹果", "一、苹果", "①苹果").

`build_splits(seed)` is deterministic, and the (category, N, phrasing) combinations of train, val and test are
disjoint, as in `count_list`. `weitiao data demo DIR --task count_list_zh` writes them;
examples/quickstart-zh.yaml trains on them and examples/rephrase/count_list_zh_eval.yaml asks the test questions
in other words.
"""
from __future__ import annotations

import random
from pathlib import Path

CATEGORIES_ZH: dict[str, list[str]] = {
    "水果": ["苹果", "香蕉", "橙子", "葡萄", "西瓜", "草莓", "芒果", "梨", "桃子", "樱桃", "荔枝", "菠萝"],
    "蔬菜": ["白菜", "萝卜", "土豆", "西红柿", "黄瓜", "茄子", "菠菜", "芹菜", "洋葱", "南瓜", "青椒", "韭菜"],
    "动物": ["老虎", "狮子", "大象", "熊猫", "猴子", "兔子", "长颈鹿", "斑马", "狐狸", "狼", "骆驼", "袋鼠"],
    "鸟类": ["麻雀", "燕子", "喜鹊", "老鹰", "鸽子", "孔雀", "天鹅", "企鹅", "猫头鹰", "鹦鹉", "乌鸦", "白鹭"],
    "颜色": ["红色", "橙色", "黄色", "绿色", "蓝色", "紫色", "黑色", "白色", "灰色", "粉色", "棕色", "青色"],
    "国家": ["中国", "日本", "法国", "德国", "巴西", "印度", "埃及", "加拿大", "澳大利亚", "意大利", "西班牙", "墨西哥"],
    "城市": ["北京", "上海", "广州", "深圳", "杭州", "成都", "西安", "南京", "武汉", "重庆", "天津", "苏州"],
    "运动": ["足球", "篮球", "排球", "乒乓球", "羽毛球", "网球", "游泳", "跑步", "滑雪", "拳击", "体操", "射箭"],
    "乐器": ["钢琴", "小提琴", "吉他", "二胡", "古筝", "琵琶", "笛子", "鼓", "萨克斯", "大提琴", "小号", "竖琴"],
    "金属": ["铁", "铜", "金", "银", "铝", "锌", "锡", "铅", "镍", "钛", "铂", "钴"],
    "花卉": ["玫瑰", "牡丹", "菊花", "荷花", "梅花", "兰花", "百合", "郁金香", "茉莉", "向日葵", "桂花", "杜鹃"],
    "交通工具": ["汽车", "火车", "飞机", "轮船", "自行车", "地铁", "公交车", "摩托车", "高铁", "出租车", "卡车", "电动车"],
    "编程语言": ["Python", "Java", "C++", "Go", "Rust", "JavaScript", "Ruby", "Swift", "Kotlin", "PHP", "Scala", "Lua"],
    "饮料": ["茶", "咖啡", "牛奶", "果汁", "可乐", "豆浆", "酸奶", "矿泉水", "柠檬水", "奶茶", "啤酒", "椰汁"],
    "身体部位": ["头", "手", "脚", "眼睛", "鼻子", "耳朵", "嘴巴", "肩膀", "膝盖", "手指", "脖子", "肚子"],
    "昆虫": ["蚂蚁", "蜜蜂", "蝴蝶", "蜻蜓", "蚊子", "苍蝇", "蟋蟀", "蝗虫", "瓢虫", "萤火虫", "蝉", "螳螂"],
}

# further members a reader accepts without looking anything up (see count_list.MORE_MEMBERS)
MORE_MEMBERS_ZH: dict[str, list[str]] = {
    "水果": ["柚子", "柠檬", "猕猴桃", "石榴", "哈密瓜", "龙眼", "桂圆", "榴莲", "李子", "杏", "山竹", "蓝莓", "柿子",
           "橘子", "火龙果", "木瓜", "椰子", "枇杷", "杨梅", "甘蔗", "桔子", "柑橘", "葡萄柚", "无花果", "枣", "红枣"],
    "蔬菜": ["胡萝卜", "卷心菜", "生菜", "西兰花", "花菜", "菜花", "豆角", "冬瓜", "丝瓜", "苦瓜", "莲藕", "蘑菇", "香菇",
           "辣椒", "大蒜", "生姜", "姜", "葱", "大葱", "油菜", "空心菜", "莴笋", "山药", "芋头", "红薯", "番茄",
           "玉米", "豌豆", "四季豆", "秋葵", "竹笋", "芦笋", "甘蓝", "西葫芦", "茼蒿", "包菜"],
    "动物": ["牛", "羊", "马", "猪", "狗", "猫", "熊", "鹿", "豹子", "猎豹", "河马", "犀牛", "松鼠", "老鼠", "刺猬",
           "考拉", "猩猩", "大猩猩", "黑猩猩", "鳄鱼", "蛇", "乌龟", "海豚", "鲸鱼", "驴", "骡子", "山羊", "绵羊", "牦牛"],
    "鸟类": ["画眉", "黄鹂", "百灵鸟", "丹顶鹤", "鹤", "啄木鸟", "大雁", "鸭子", "鹅", "鸡", "海鸥", "翠鸟", "杜鹃",
           "鸵鸟", "火烈鸟", "蜂鸟", "秃鹫", "黄莺", "八哥", "布谷鸟", "夜莺", "鹈鹕"],
    "颜色": ["金色", "银色", "褐色", "米色", "天蓝色", "深蓝色", "浅绿色", "橘色", "咖啡色", "玫红色", "藏青色", "墨绿色"],
    "国家": ["美国", "英国", "俄罗斯", "韩国", "朝鲜", "越南", "泰国", "新加坡", "马来西亚", "印度尼西亚", "阿根廷",
           "南非", "新西兰", "荷兰", "瑞士", "瑞典", "挪威", "芬兰", "丹麦", "葡萄牙", "希腊", "土耳其", "伊朗",
           "沙特阿拉伯", "以色列", "肯尼亚", "尼日利亚", "智利", "秘鲁", "古巴", "蒙古", "巴基斯坦", "菲律宾", "波兰"],
    "城市": ["厦门", "青岛", "大连", "长沙", "郑州", "济南", "哈尔滨", "沈阳", "昆明", "贵阳", "南宁", "福州", "合肥",
           "南昌", "太原", "石家庄", "兰州", "拉萨", "乌鲁木齐", "呼和浩特", "宁波", "无锡", "香港", "澳门", "台北"],
    "运动": ["田径", "举重", "击剑", "摔跤", "柔道", "跆拳道", "武术", "太极拳", "高尔夫", "棒球", "橄榄球", "冰球",
           "滑冰", "冲浪", "攀岩", "骑自行车", "自行车", "赛艇", "跳水", "跳高", "跳远", "马拉松", "台球", "保龄球"],
    "乐器": ["笙", "箫", "唢呐", "扬琴", "马头琴", "手风琴", "口琴", "长笛", "单簧管", "双簧管", "长号", "圆号",
           "大号", "贝斯", "电子琴", "木琴", "编钟", "锣", "中提琴", "尤克里里", "葫芦丝", "古琴"],
    "金属": ["汞", "水银", "钨", "铬", "锰", "镁", "钙", "钠", "钾", "锂", "铀", "钢"],
    "花卉": ["水仙", "月季", "茶花", "山茶花", "桃花", "樱花", "杏花", "梨花", "康乃馨", "薰衣草", "紫罗兰", "丁香",
           "海棠", "芍药", "栀子花", "蒲公英", "满天星", "仙人掌", "睡莲", "风信子", "蝴蝶兰", "勿忘我"],
    "交通工具": ["船", "公共汽车", "大巴", "电车", "有轨电车", "轻轨", "直升机", "游艇", "三轮车", "马车", "缆车",
             "货车", "救护车", "消防车", "拖拉机", "滑板", "轿车", "面包车", "渡轮", "潜水艇"],
    "编程语言": ["C", "C#", "TypeScript", "Haskell", "Perl", "R", "MATLAB", "Julia", "Dart", "Elixir", "Erlang",
             "Objective-C", "SQL", "Shell", "Bash", "Fortran", "Pascal", "Lisp", "Clojure", "Visual Basic", "F#"],
    "饮料": ["红茶", "绿茶", "乌龙茶", "花茶", "豆奶", "汽水", "雪碧", "苏打水", "热巧克力", "可可", "红酒", "葡萄酒",
           "白酒", "黄酒", "米酒", "橙汁", "苹果汁", "酸梅汤", "凉茶", "椰奶", "奶昔", "绿豆汤", "拿铁"],
    "身体部位": ["头发", "额头", "眉毛", "脸", "牙齿", "舌头", "下巴", "胳膊", "手臂", "手腕", "手肘", "胸", "背",
             "腰", "腿", "大腿", "小腿", "脚踝", "脚趾", "心脏", "肺", "胃", "肝", "皮肤", "嘴唇", "脸颊", "手掌"],
    "昆虫": ["蟑螂", "甲虫", "天牛", "蚕", "跳蚤", "虱子", "白蚁", "飞蛾", "蛾子", "蚱蜢", "纺织娘", "屎壳郎", "螽斯",
           "蝈蝈", "黄蜂", "马蜂", "蜉蝣", "蚜虫", "臭虫", "金龟子"],
}

PHRASINGS_ZH = [
    "请列出{n}种{category}。",
    "列举{n}个{category}。",
    "写出{n}种{category}，用编号列表。",
    "我需要正好{n}种{category}，分别是什么？",
    "能给我列出{n}种{category}吗？",
    "说出{n}种{category}。",
]
SPLIT_SIZES = {"train": 480, "val": 40, "test": 80}


def answer(items: list[str]) -> str:
    return "\n".join(f"{k}. {item}" for k, item in enumerate(items, start=1))


def make_row(category: str, n: int, phrasing: int, rng: random.Random) -> dict:
    items = rng.sample(CATEGORIES_ZH[category], n)
    question = PHRASINGS_ZH[phrasing].format(n=n, category=category)
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer(items)}],
            "meta": {"category": category, "n": n, "phrasing": phrasing}}


def build_splits(seed: int = 0, sizes: dict[str, int] = SPLIT_SIZES) -> dict[str, list[dict]]:
    from weitiao.demo import disjoint_splits

    return disjoint_splits(list(CATEGORIES_ZH), len(PHRASINGS_ZH), make_row, seed, sizes)


def write_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    from weitiao.demo import write_split_files

    return write_split_files(out_dir, build_splits(seed))
